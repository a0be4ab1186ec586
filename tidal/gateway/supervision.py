"""The gateway supervisor's decisions, pure: what to do with the gateway at start, when to restart it, how to tell its exit.

`tidal.gateway.supervisor` carries them out; tests step the times by hand.
"""

from __future__ import annotations

import signal
from enum import Enum
from typing import Sequence

from pydantic import BaseModel

CRASH_WINDOW_SECONDS = 60.0
MAX_RESTART_DELAY_SECONDS = 30.0


class RestartRecord(BaseModel):
    time: float  # epoch seconds
    reason: str


class RunRecord(BaseModel):
    """`run/gateway.json`: which process is this home's gateway, and its history."""

    pid: int
    proc_start: int
    host: str
    port: int
    started_at: float  # epoch seconds
    restarts: int = 0
    last_restart: RestartRecord | None = None


def restart_delay(exits: Sequence[float], now: float) -> float:
    """Seconds to wait before starting the gateway again, given when it exited (monotonic seconds).

    A gateway that died now and then comes back at once: traffic waits in the socket's
    queue meanwhile. One that keeps dying (a broken install, a bad host) must not spin:
    from the fourth exit within a minute it waits 1, 2, 4, ... seconds, up to 30.
    """
    recent = sum(1 for t in exits if now - t < CRASH_WINDOW_SECONDS)
    if recent <= 3:
        return 0.0
    return min(MAX_RESTART_DELAY_SECONDS, 2.0 ** (recent - 4))


def describe_exit(returncode: int | None, last_words: str | None = None) -> str:
    """Why the gateway exited: the signal that killed it, else what it said, else its exit status.

    `returncode` is None when it was not this control plane's child (it outlived an earlier one).
    """
    if returncode is not None and returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    if last_words:
        return last_words
    if returncode is None:
        # Every exit it can see coming leaves a word; none means a signal it cannot catch, or the kernel.
        return ("was killed without a word (SIGKILL or the kernel's OOM killer; it was started by an earlier "
                "control plane, so its exit status is not known)")
    return f"exited with status {returncode}"


class StartAction(Enum):
    ADOPT = "adopt"      # the gateway outlived the previous control plane: keep it
    REPLACE = "replace"  # it runs, but not as asked (another port) or it does not answer: stop it, start one
    START = "start"      # none runs: start one


def plan_start(rec: RunRecord | None, alive: bool, answers: bool, port: int,
               last_words: str | None) -> tuple[StartAction, str | None]:
    """What a starting control plane does with the gateway the run file names; and why, for a restart's record.

    `alive`: that process still runs (same pid and start time, this home's marker);
    `answers`: it answered the token's handshake; `port`: the port asked for now (0: any).
    """
    if rec is None:
        return StartAction.START, None
    if not alive:
        return StartAction.START, f"process {rec.pid} {describe_exit(None, last_words)} while no control plane ran"
    if port not in (0, rec.port):
        return StartAction.REPLACE, f"process {rec.pid} was replaced: port {port} was asked for, it served {rec.port}"
    if not answers:
        return StartAction.REPLACE, f"process {rec.pid} was replaced: it did not answer the control plane"
    return StartAction.ADOPT, None
