"""The runtime interface and the registry that picks a runtime by the files in a version directory."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from tidal.errors import FailedPrecondition
from tidal.models.config import RuntimeOptions
from tidal.models.signatures import Signature


class Runtime(Protocol):
    platform: str
    signatures: dict[str, Signature]

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one signature on already-conformed inputs (blocking; may release the GIL)."""

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RuntimeEntry:
    platform: str
    recognises: Callable[[list[str]], bool]  # file names in the version directory -> is this runtime's
    module: str  # exposes load(path, options) -> Runtime
    extra: str | None  # pip extra that provides the runtime's dependencies


def _has_onnx(files: list[str]) -> bool:
    return any(f.lower().endswith(".onnx") for f in files)


def _has_saved_model(files: list[str]) -> bool:
    return "saved_model.pb" in files or "saved_model.pbtxt" in files


# Checked in order; the first whose files are present wins.
RUNTIMES: dict[str, RuntimeEntry] = {
    "onnx": RuntimeEntry("onnxruntime_onnx", _has_onnx, "tidal.models.runtimes.onnx", None),
    "tensorflow": RuntimeEntry("tensorflow", _has_saved_model, "tidal.models.runtimes.tensorflow", "tensorflow"),
}


def detect(path: str) -> str:
    """The registry key of the runtime for a version directory."""
    try:
        files = sorted(os.listdir(path))
    except OSError as e:
        raise FailedPrecondition(f"cannot read version directory: {e.strerror or e}") from None
    for key, entry in RUNTIMES.items():
        if entry.recognises(files):
            return key
    shown = ", ".join(files[:10]) + (", ..." if len(files) > 10 else "") if files else "nothing"
    raise FailedPrecondition(
        f"no runtime recognises the version directory (it holds {shown}); expected a .onnx file "
        f"or a TensorFlow saved_model.pb")


def load_runtime(path: str, options: RuntimeOptions) -> Runtime:
    """Load the model in a local version directory with the runtime its files call for (blocking)."""
    key = detect(path)
    entry = RUNTIMES[key]
    try:
        module = importlib.import_module(entry.module)
    except ImportError as e:
        hint = f"pip install tidal[{entry.extra}]" if entry.extra else "reinstall tidal"
        raise FailedPrecondition(
            f"the {entry.platform} runtime is not available ({e.name or e}); install it with: {hint}") from None
    return module.load(path, options)
