"""Running a named capacity policy (or the offline optimum) on a trace directory under the SpotHedge protocol, or
under the fuller model (`tidal.sim.fuller`: notices, (type, zone) pools, refused launches, moving prices)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from tidal.capacity.policies import POLICIES
from tidal.errors import UserError
from tidal.capacity.catalog import NOTICE_SECONDS
from tidal.sim import fuller, optimal, traces
from tidal.sim.fuller import FullerSettings
from tidal.sim.protocol import ProtocolSettings, RepeatResult, TraceResult, run_repeat

OPTIMAL = "optimal"
NAMES = ("on-demand", "spot-only", "even-spread", "round-robin", "spothedge", "spothedge-lean", "ess", "tidal-hedge",
         "tidal", "tidal-notice", OPTIMAL)
MODELS = ("protocol", "fuller")


@dataclass(frozen=True)
class SpotRun:
    """One protocol setting, as the CLI and the benchmarks give it."""
    target: int = 3
    overprovision: int | None = None   # None: each policy's own default
    cold_start_seconds: float = 120.0
    tick_seconds: float = 30.0
    ticks: int = 2880
    repeats: int = 10
    seed: int = 0
    on_demand_price: float = 3.0
    params: tuple[tuple[str, str], ...] = ()   # --param KEY=VALUE: a policy's own parameters
    model: str = "protocol"                    # or "fuller"
    provider: str = "aws"                      # the fuller model's notice lead, unless notice_seconds says
    notice_seconds: float | None = None
    launch_failure_rate: float = 0.0           # the fuller model's random refusals of spot launches

    def fuller(self) -> FullerSettings:
        p = self.settings()
        if self.provider not in NOTICE_SECONDS:
            raise UserError(f"unknown --provider {self.provider!r} (choose from {', '.join(NOTICE_SECONDS)})")
        if not 0 <= self.launch_failure_rate < 1 or (self.notice_seconds is not None and self.notice_seconds < 0):
            raise UserError("--launch-failure-rate must be in [0, 1) and --notice non-negative")
        notice = NOTICE_SECONDS[self.provider] if self.notice_seconds is None else self.notice_seconds
        return FullerSettings(p.target, p.cold_start_ticks, p.tick_seconds, notice, self.launch_failure_rate,
                              p.on_demand_price)

    def settings(self) -> ProtocolSettings:
        if self.tick_seconds <= 0 or self.cold_start_seconds < 0 or self.target < 1 or self.ticks < 1:
            raise UserError("--tick and --ticks must be positive, --cold-start non-negative, --target at least 1")
        cold = math.ceil(self.cold_start_seconds / self.tick_seconds - 1e-9)
        if cold >= self.ticks:
            raise UserError(f"--cold-start ({self.cold_start_seconds:g} s) leaves no tick to measure")
        return ProtocolSettings(self.target, cold, self.tick_seconds, self.on_demand_price)


def policy_params(name: str, run: SpotRun) -> Any:
    policy = POLICIES[name]
    fields = policy.params.model_fields
    given: dict[str, Any] = {}
    if run.overprovision is not None and "overprovision" in fields:
        given["overprovision"] = run.overprovision
    if "cold_start_seconds" in fields:
        given["cold_start_seconds"] = run.cold_start_seconds
    if "decision_seconds" in fields:
        given["decision_seconds"] = run.tick_seconds
    if "notice_seconds" in fields and run.model == "fuller":
        given["notice_seconds"] = run.fuller().notice_seconds
    given.update({key: value for key, value in run.params if key in fields})
    try:
        return policy.params(**given)
    except ValidationError as exc:
        raise UserError(f"bad parameters for policy {name!r}: {exc.errors()[0]['msg']}") from None


def check_params(names: list[str], run: SpotRun) -> None:
    """Every --param must name a parameter of at least one of the policies run."""
    for key, _ in run.params:
        if not any(name != OPTIMAL and key in POLICIES[name].params.model_fields for name in names):
            known = sorted({f for name in names if name != OPTIMAL for f in POLICIES[name].params.model_fields})
            raise UserError(f"--param {key}: no such parameter for {', '.join(names)} "
                            f"(parameters: {', '.join(known) or 'none'})")


def capacities(trace_dir: str, run: SpotRun) -> tuple[traces.SpotTrace, list]:
    trace = traces.load_spot_traces(trace_dir)
    expanded = traces.expand(trace, run.tick_seconds)
    offs = traces.offsets(expanded, run.ticks, run.repeats, run.seed)
    return trace, [traces.window(expanded, o, run.ticks) for o in offs]


def evaluate(trace_dir: str, name: str, run: SpotRun, loaded: tuple | None = None) -> TraceResult:
    if name not in NAMES:
        raise UserError(f"unknown policy {name!r} (choose from {', '.join(NAMES)}, or all)")
    if run.repeats < 1:
        raise UserError("--repeats must be at least 1")
    if run.model == "fuller":
        return _evaluate_fuller(trace_dir, name, run)
    settings = run.settings()
    trace, caps = loaded or capacities(trace_dir, run)
    if name == OPTIMAL:
        results: tuple[RepeatResult, ...] = tuple(optimal.run_repeat(c, settings) for c in caps)
    else:
        params = policy_params(name, run)
        results = tuple(run_repeat(c, trace.zones, POLICIES[name], params, run.seed + i, settings)
                        for i, c in enumerate(caps))
    return TraceResult(trace_dir, name, results)


def _evaluate_fuller(trace_dir: str, name: str, run: SpotRun) -> TraceResult:
    settings = run.fuller()
    trace = traces.load_spot_traces(trace_dir)
    if trace.on_demand_price is not None:
        settings = replace(settings, on_demand_price=trace.on_demand_price)
    windows = fuller.windows(trace, run.tick_seconds, run.ticks, run.repeats, run.seed)
    if name == OPTIMAL:
        return TraceResult(trace_dir, name, tuple(fuller.optimal_repeat(c, p, settings) for c, p in windows))
    return TraceResult(trace_dir, name, tuple(fuller.run_trace(windows, fuller.offers_of(trace), POLICIES[name],
                                                               policy_params(name, run), settings, run.seed)))
