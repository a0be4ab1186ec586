"""A clock whose seconds pass faster than real ones, so notices and waits are short in demos and tests."""

from __future__ import annotations

import asyncio
import time


class ScaledClock:
    """Virtual time = anchor_virtual + (real time - anchor_real) / time_factor.

    With `time_factor` 0.05 a 120 s preemption notice lasts 6 real seconds. The
    anchors are kept per installation (in the store), so virtual time never goes
    backwards across a control-plane restart.
    """

    def __init__(self, time_factor: float = 1.0, anchor_real: float | None = None,
                 anchor_virtual: float | None = None) -> None:
        if time_factor <= 0:
            raise ValueError("time factor must be positive")
        self.time_factor = time_factor
        self.anchor_real = time.time() if anchor_real is None else anchor_real
        self.anchor_virtual = self.anchor_real if anchor_virtual is None else anchor_virtual
        self._mono_origin = time.monotonic()

    def now(self) -> float:
        return self.anchor_virtual + (time.time() - self.anchor_real) / self.time_factor

    def monotonic(self) -> float:
        return (time.monotonic() - self._mono_origin) / self.time_factor

    def real(self, seconds: float) -> float:
        """Real seconds that `seconds` of this clock take."""
        return seconds * self.time_factor

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) * self.time_factor)
