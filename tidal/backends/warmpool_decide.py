"""The warm pool's settings and pure decisions: which runtimes to keep started, which idle process to hand a
replica, which replica must start cold, and what runtime a model calls for."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field

from tidal.errors import UserError

POOL_ENV = "TIDAL_WARM_POOL"
WARM_HOME_ENV = "TIDAL_WARM_HOME"  # marks a pool process of this home (assigned or not)
SLOT_WIDTH = 200  # the placeholder's length: a replica id up to SLOT_WIDTH - 2 characters fits
# Variables a runtime reads once, when it is imported or first starts: a replica that sets them must
# start cold, since a pool process imported its runtimes without them.
IMPORT_TIME_PREFIXES = ("OMP_", "KMP_", "MKL_", "OPENBLAS_", "GOMP_", "TF_", "XLA_", "ORT_", "ONNXRUNTIME_",
                        "CUDA_", "NVIDIA_", "LD_", "PYTHON", "MALLOC_")


class Flavour(StrEnum):
    """What a pool process imported ahead (named like the runtime registry's keys)."""
    ONNX = "onnx"
    TENSORFLOW = "tensorflow"

    @property
    def runtimes(self) -> tuple[str, ...]:
        return ("onnx", "tensorflow") if self is Flavour.TENSORFLOW else ("onnx",)


class WarmPoolSettings(BaseModel):
    """The pool's knobs; `size` 0 turns it off."""
    model_config = ConfigDict(frozen=True, extra="forbid")
    size: int = Field(1, ge=0, le=16)                   # idle processes kept per runtime in use
    refill_delay_seconds: float = Field(1.0, ge=0)      # after an assignment: the new replica loads first
    assign_timeout_seconds: float = Field(2.0, gt=0)    # an idle process acknowledges within milliseconds
    max_backoff_seconds: float = Field(60.0, gt=0)      # between replacements of processes that keep dying

    @property
    def enabled(self) -> bool:
        return self.size > 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WarmPoolSettings:
        text = env.get(POOL_ENV, "").strip().lower()
        if text in ("", "on", "true", "yes"):
            return cls()
        if text in ("off", "false", "no"):
            return cls(size=0)
        if text.isdigit() and int(text) <= 16:
            return cls(size=int(text))
        raise UserError(f"{POOL_ENV} must be on, off or a number of processes per runtime (0-16), got {text!r}")


class SlotState(StrEnum):
    STARTING = "starting"  # importing
    WARM = "warm"          # imported, waiting for an assignment


@dataclass(frozen=True)
class SlotView:
    id: int
    flavour: Flavour
    state: SlotState


@dataclass(frozen=True)
class Deaths:
    """Processes of one flavour that died in a row without becoming ready or serving, and when the last did."""
    count: int = 0
    last_at: float = 0.0


@dataclass(frozen=True)
class PoolView:
    slots: tuple[SlotView, ...]
    flavours: frozenset[Flavour]                       # runtimes in use: kept warm
    last_assigned: Mapping[Flavour, float] = field(default_factory=dict)
    deaths: Mapping[Flavour, Deaths] = field(default_factory=dict)


@dataclass(frozen=True)
class Spawn:
    flavour: Flavour


@dataclass(frozen=True)
class Refill:
    spawn: tuple[Spawn, ...]
    next_at: float | None  # when to decide again (a delay or a pause runs out); None: on the next event


def backoff(deaths: Deaths, settings: WarmPoolSettings) -> float:
    """The pause before replacing a process after `deaths.count` deaths in a row: none, 1 s, 2 s, 4 s, ..."""
    if deaths.count == 0:
        return 0.0
    return min(settings.max_backoff_seconds, 2.0 ** (deaths.count - 1))


def plan_refill(view: PoolView, now: float, settings: WarmPoolSettings) -> Refill:
    """Start what brings each flavour in use back to `size` processes, once its delays have passed."""
    spawn: list[Spawn] = []
    due: list[float] = []
    for flavour in sorted(view.flavours):
        missing = settings.size - sum(1 for s in view.slots if s.flavour is flavour)
        if missing <= 0:
            continue
        ready_at = view.last_assigned.get(flavour, float("-inf")) + settings.refill_delay_seconds
        deaths = view.deaths.get(flavour, Deaths())
        if deaths.count:
            ready_at = max(ready_at, deaths.last_at + backoff(deaths, settings))
        if now >= ready_at:
            spawn += [Spawn(flavour)] * missing
        else:
            due.append(ready_at)
    return Refill(tuple(spawn), min(due) if due else None)


def choose(slots: tuple[SlotView, ...], want: Flavour | None) -> int | None:
    """The idle process to hand a replica of runtime `want` (None: not known), or None to start one cold.

    Best a process with that runtime imported (one with TensorFlow imported has both); for a SavedModel,
    an ONNX one still skips the interpreter and tidal's imports. Starting ones are not handed out: the
    assignment must be acknowledged at once, under the replica's marker.
    """
    warm = [s for s in slots if s.state is SlotState.WARM]
    covers = [s for s in warm if want is not None and want.value in s.flavour.runtimes]
    exact = [s for s in covers if s.flavour is want]
    for group in (exact, covers, sorted(warm, key=lambda s: s.flavour is not Flavour.TENSORFLOW)):
        if group:
            return group[0].id
    return None


def unfit(replica: str, env: Mapping[str, str], pool_cuda: str | None) -> str | None:
    """Why a replica must start cold rather than from the pool (None: it may come from the pool).

    `env` is what the replica adds to the control plane's environment; `pool_cuda` the pool processes'
    CUDA_VISIBLE_DEVICES (None: unset).
    """
    if len(replica) > SLOT_WIDTH - 2:
        return "its id is longer than a pool process's marker holds"
    if env.get("CUDA_VISIBLE_DEVICES") != pool_cuda:
        return "it is pinned to GPUs (the pool's processes started without them)"
    late = sorted(k for k in env if k != "CUDA_VISIBLE_DEVICES" and k.upper().startswith(IMPORT_TIME_PREFIXES))
    if late:
        return f"it sets {', '.join(late)}, which its runtime reads when it is imported"
    return None


def model_flavour(base_path: str) -> Flavour | None:
    """The runtime a local model's latest version calls for; None for a remote store or no version yet."""
    url = urlparse(base_path)
    if url.scheme not in ("", "file"):
        return None
    root = Path(url.path if url.scheme else base_path)
    try:
        versions = [int(p.name) for p in root.iterdir() if p.name.isdigit() and p.is_dir()]
        files = sorted(os.listdir(root / str(max(versions)))) if versions else []
    except OSError:
        return None
    return next((flavour for flavour, recognises in _RECOGNISERS if recognises(files)), None)


# The model server's runtime registry (tidal.models.runtimes) decides what loads a version; these mirror its
# rules, in its order, without importing it (and numpy) into the control plane. A wrong guess would only pick
# a pool process with fewer imports done: slower, never wrong.
_RECOGNISERS = (
    (Flavour.ONNX, lambda files: any(f.lower().endswith(".onnx") for f in files)),
    (Flavour.TENSORFLOW, lambda files: "saved_model.pb" in files or "saved_model.pbtxt" in files),
)
