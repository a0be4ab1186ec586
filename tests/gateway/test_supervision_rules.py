"""The gateway supervisor's rules: when to start a dead gateway again, and how its exit is told."""

import signal

import pytest

from tidal.gateway.supervisor import CRASH_WINDOW_SECONDS, describe_exit, restart_delay


@pytest.mark.parametrize("name, exits, now, want", [
    ("first exit: at once", [100.0], 100.0, 0.0),
    ("three within a minute: still at once (traffic waits in the socket's queue)", [90.0, 95.0, 100.0], 100.0, 0.0),
    ("fourth within a minute: 2**0 = 1 s", [70.0, 80.0, 90.0, 100.0], 100.0, 1.0),
    ("fifth: 2**1 = 2 s", [60.0, 70.0, 80.0, 90.0, 100.0], 100.0, 2.0),
    ("ninth: 2**5 = 32, capped at 30 s", [92.0 + i for i in range(9)], 100.0, 30.0),
    ("old exits fall out of the window: 2 recent ones, at once",
     [10.0, 20.0, 30.0, 100.0 - CRASH_WINDOW_SECONDS + 1, 100.0], 100.0, 0.0),
    ("no exits at all", [], 100.0, 0.0),
])
def test_restart_delay(name, exits, now, want):
    assert restart_delay(exits, now) == want, name


@pytest.mark.parametrize("code, words, want", [
    (-signal.SIGKILL, None, "was killed by SIGKILL"),
    (-signal.SIGSEGV, "ignored: the signal says more", "was killed by SIGSEGV"),
    (0, "was stopped by SIGTERM (it drained its requests first)", "was stopped by SIGTERM (it drained its requests first)"),
    (1, None, "exited with status 1"),
    (None, "crashed: RuntimeError: boom", "crashed: RuntimeError: boom"),
])
def test_describe_exit(code, words, want):
    assert describe_exit(code, words) == want


def test_an_exit_no_one_saw_coming_says_so():
    # Not our child (it outlived an earlier control plane) and no last words: an uncatchable signal.
    assert describe_exit(None, None).startswith("was killed without a word (SIGKILL")
