"""The model server's one data plane under its protocol adapters: resolve, run, build results, map errors.

TF Serving REST (`tfserving.py`), the Open Inference Protocol over REST (`v2.py`) and gRPC
(`grpc_v2.py`), and TF Serving's gRPC API (`grpc_api.py`) each decode their request, call this, and encode what comes
back. So a model, version and signature are resolved by one set of rules, classify and
regress results are built (and checked) once, and an exception becomes one `Fault` that
each protocol writes as its own status: the same request gets the same answer, or the
same error class, whichever way it came in.

Large bodies are decoded away from the event loop within a per-request memory budget
(`tidal.server.large`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from tidal.errors import Code, FailedPrecondition, InvalidArgument, TidalError, http_status
from tidal.models.signatures import (
    CLASSIFY, CLASSIFY_SIGNATURE, DEFAULT_SIGNATURE, PREDICT, REGRESS, REGRESS_SIGNATURE, Signature,
)
from tidal.server.large import LargeBodies

log = logging.getLogger("tidal.server")


class Method(str, Enum):
    PREDICT = PREDICT
    CLASSIFY = CLASSIFY
    REGRESS = REGRESS


_METHOD_SIGNATURE = {Method.CLASSIFY: CLASSIFY_SIGNATURE, Method.REGRESS: REGRESS_SIGNATURE}
_KIND = {Method.CLASSIFY: "classification", Method.REGRESS: "regression"}


# -- errors: the one table --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Fault:
    """What an exception means to a client: a canonical code, an HTTP status and one line."""

    code: Code
    http_status: int
    message: str
    server_fault: bool  # the server's own bug (logged with its traceback), not the client's mistake


INTERNAL_MESSAGE = "Internal: unexpected error; see the server log"


def fault(exc: BaseException) -> Fault:
    """The one exception -> status table of the model server."""
    if isinstance(exc, TidalError):
        return Fault(exc.code, exc.http_status, exc.message, False)
    if isinstance(exc, RecursionError):  # a value nested past what the decoders check for
        return Fault(Code.INVALID_ARGUMENT, 400, "the request is nested too deeply", False)
    if isinstance(exc, MemoryError):
        return Fault(Code.RESOURCE_EXHAUSTED, 413, "not enough memory to decode the request; send less at once",
                     False)
    return Fault(Code.INTERNAL, http_status(Code.INTERNAL), INTERNAL_MESSAGE, True)


def report(exc: BaseException, api: str, model: str) -> Fault:
    """`fault(exc)`, logged: a traceback only for the server's own faults, at most one line otherwise."""
    f = fault(exc)
    if f.server_fault:
        log.error("%s failed for model %r", api, model, exc_info=exc)
    elif f.http_status >= 500:
        log.warning("%s for model %r: %d %s", api, model, f.http_status, f.message)
    else:  # a client's mistake: the client has the message; the log needs no more than a debug line
        log.debug("%s for model %r: %d %s", api, model, f.http_status, f.message)
    return f


# -- signatures ----------------------------------------------------------------------------

def signature(sigs: dict[str, Signature], name: str | None, method: Method) -> Signature:
    """Of a servable's signatures, the one a request names (or its method's default), checked against the method."""
    if not name:
        name = DEFAULT_SIGNATURE
        default = sigs.get(name)
        if method is Method.PREDICT:
            if default is None and len(sigs) == 1:  # a model with one signature under another name
                return next(iter(sigs.values()))
        else:
            alt = _METHOD_SIGNATURE[method]
            # TF estimators (and Tidal's ONNX runtime) put classify/regress signatures under these names.
            if (default is None or default.method != method) and alt in sigs and sigs[alt].method == method:
                name = alt
    sig = sigs.get(name)
    if sig is None:
        if method is Method.PREDICT:
            raise FailedPrecondition(f'Serving signature key "{name}" not found.')
        raise InvalidArgument(f"No signature was found with the name: {name}")
    if method is not Method.PREDICT and sig.method != method.value:
        raise InvalidArgument(
            f"Expected {_KIND[method]} signature method_name to be {method.value}. Was: {sig.method}")
    return sig


def check_datatype(sig: Signature, name: str, datatype: str, model: str) -> None:
    """A tensor declared with another datatype than the model's input is refused, not converted (V2)."""
    spec = sig.inputs.get(name)
    if spec is not None and spec.datatype != datatype:
        raise InvalidArgument(f"inference input '{name}' data-type is '{datatype}', but model '{model}' "
                              f"expects '{spec.datatype}'")


# -- classify / regress results ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Classifications:
    """Per example, its classes: labels (None: the model gives none) and float32 scores (None: none)."""

    labels: list[list[str]] | None
    scores: np.ndarray | None  # [n, k] float32

    @property
    def rows(self) -> int:
        return len(self.labels) if self.labels is not None else self.scores.shape[0]

    @property
    def width(self) -> int:
        return len(self.labels[0]) if self.labels else (self.scores.shape[1] if self.scores is not None else 0)


def _names(keys) -> str:
    return "{" + ", ".join(sorted(keys)) + "}"


def _label(v) -> str:
    return v.decode("utf-8", "replace") if type(v) is bytes else str(v)


def classifications(outputs: dict[str, np.ndarray], n: int) -> Classifications:
    """A classify signature's outputs for `n` examples, checked like TF Serving's classifier."""
    classes = outputs.get("classes")
    scores = outputs.get("scores")
    if classes is None and scores is None:
        raise InvalidArgument("Expected classification signature outputs to contain classes or scores "
                              f"(it has {_names(outputs)})")
    for name, arr in (("classes", classes), ("scores", scores)):
        if arr is not None and (arr.ndim != 2 or arr.shape[0] != n):
            raise InvalidArgument(f"Expected {name} Tensor shape: [batch_size num_classes] with batch_size {n} "
                                  f"but got {list(arr.shape)}")
    if scores is not None:
        if scores.dtype.kind != "f":
            raise InvalidArgument(f"Expected scores Tensor of DT_FLOAT. Got: {scores.dtype}")
        if classes is not None and classes.shape[1] != scores.shape[1]:
            raise InvalidArgument(f"Tensors class and score should match in dim[1]. Got {classes.shape[1]} "
                                  f"vs. {scores.shape[1]}")
        scores = scores.astype(np.float32, copy=False)
    labels = None
    if classes is not None:
        labels = [[_label(v) for v in row] for row in classes.tolist()]
    return Classifications(labels, scores)


def regressions(outputs: dict[str, np.ndarray], n: int) -> np.ndarray:
    """A regress signature's values for `n` examples as float32 [n], checked like TF Serving's regressor."""
    arr = outputs.get("outputs")
    if arr is None:
        if len(outputs) != 1:
            raise InvalidArgument(f"No output named 'outputs' (the signature has {_names(outputs)})")
        arr = next(iter(outputs.values()))
    if arr.dtype.kind not in "fiu":
        raise InvalidArgument(f"Expected output Tensor of DT_FLOAT. Got: {arr.dtype}")
    if not (arr.shape == (n,) or arr.shape == (n, 1)):
        raise InvalidArgument(f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
                              f"but got {list(arr.shape)}")
    return arr.reshape(-1).astype(np.float32, copy=False)




# -- the data plane -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Target:
    """What a request runs: a loaded model version and one of its signatures."""

    servable: Any
    signature: Signature

    @property
    def model(self) -> str:
        return self.servable.name

    @property
    def version(self) -> int:
        return self.servable.version


class DataPlane:
    """Resolves and runs requests for every protocol adapter over one model manager."""

    def __init__(self, manager, large: LargeBodies | None = None, *, version_zero_is_default: bool = False) -> None:
        self.manager = manager
        self.large = large if large is not None else LargeBodies()
        # OVMS reads version 0 as "the default version"; TF Serving has no version 0 (not found), hence off.
        self.version_zero_is_default = version_zero_is_default

    def servable(self, name: str, version: int | None = None, label: str | None = None):
        """The loaded version a request names (NotFound with TF Serving's messages when none is)."""
        if version == 0 and self.version_zero_is_default:
            version = None
        return self.manager.resolve(name, version, label)

    def resolve(self, name: str, version: int | None, label: str | None, signature_name: str | None,
                method: Method) -> Target:
        servable = self.servable(name, version, label)
        return Target(servable, signature(servable.signatures, signature_name, method))

    async def predict(self, target: Target, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return await target.servable.predict(target.signature.name, inputs)

    async def classify(self, target: Target, inputs: dict[str, np.ndarray], n: int) -> Classifications:
        return classifications(await self.predict(target, inputs), n)

    async def regress(self, target: Target, inputs: dict[str, np.ndarray], n: int) -> np.ndarray:
        return regressions(await self.predict(target, inputs), n)
