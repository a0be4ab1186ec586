"""The gateway supervisor's rules: when to start a dead gateway again, and how its exit is told."""

import signal

import pytest

from tidal.gateway.supervision import (CRASH_WINDOW_SECONDS, RunRecord, StartAction, describe_exit, plan_start,
                                      restart_delay)


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


REC = RunRecord(pid=41, proc_start=7, host="127.0.0.1", port=8501, started_at=0.0, restarts=2)


@pytest.mark.parametrize("name, rec, alive, answers, port, words, want", [
    ("first start: no run file", None, False, False, 8501, None, (StartAction.START, None)),
    ("it outlived the control plane and answers: adopt", REC, True, True, 8501, None, (StartAction.ADOPT, None)),
    ("port 0 asked: any port will do", REC, True, True, 0, None, (StartAction.ADOPT, None)),
    ("another port asked: replace", REC, True, True, 9000, None,
     (StartAction.REPLACE, "process 41 was replaced: port 9000 was asked for, it served 8501")),
    ("alive but silent (hung, or not ours): replace", REC, True, False, 8501, None,
     (StartAction.REPLACE, "process 41 was replaced: it did not answer the control plane")),
    ("it died while no control plane ran, and said why", REC, False, False, 8501,
     "was stopped by SIGTERM (it drained its requests first)",
     (StartAction.START, "process 41 was stopped by SIGTERM (it drained its requests first) while no control "
                         "plane ran")),
])
def test_plan_start(name, rec, alive, answers, port, words, want):
    assert plan_start(rec, alive, answers, port, words) == want, name
