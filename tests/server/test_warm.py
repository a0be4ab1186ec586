"""A warm process takes a replica's marker where /proc shows its environment, and says so when it cannot."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tidal.backends.local import proc_environ

PY = sys.executable
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TAKE = ("import os, sys, time\n"
        "from tidal.server.warm import _find_slot, take_marker\n"
        "try:\n"
        "    take_marker(_find_slot(), sys.argv[1])\n"
        "except ValueError as exc:\n"
        "    print(exc, flush=True)\n"
        "print('done', flush=True)\n"
        "time.sleep(30)\n")


@pytest.mark.parametrize("first", [True, False])
def test_the_marker_is_written_where_proc_shows_the_environment(first):
    env = {"TIDAL_WARM_SLOT": "x" * 40} if first else {"A": "1", "TIDAL_WARM_SLOT": "x" * 40, "B": "2"}
    env["PATH"] = os.environ.get("PATH", "")
    proc = subprocess.Popen([PY, "-c", TAKE, "svc-7"], env=env, stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == "done"
        seen = proc_environ(proc.pid)
        assert seen["TIDAL_REPLICA_ID"] == "svc-7" and "TIDAL_WARM_SLOT" not in seen
        assert (seen.get("A"), seen.get("B")) == ((None, None) if first else ("1", "2"))
    finally:
        proc.kill()
        proc.wait()


def test_an_id_longer_than_the_slot_is_refused_and_nothing_changes():
    env = {"TIDAL_WARM_SLOT": "x" * 8, "PATH": os.environ.get("PATH", "")}
    proc = subprocess.Popen([PY, "-c", TAKE, "a-much-longer-replica-id"], env=env, stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    try:
        assert "longer than the slot holds" in proc.stdout.readline()
        assert proc_environ(proc.pid)["TIDAL_WARM_SLOT"] == "x" * 8
    finally:
        proc.kill()
        proc.wait()


def test_a_process_without_a_slot_says_it_is_unfit_and_exits():
    ours, theirs = socket.socketpair()
    env = {k: v for k, v in os.environ.items() if k != "TIDAL_WARM_SLOT"}
    proc = subprocess.Popen([PY, "-P", "-m", "tidal.server.warm", "--channel-fd", str(theirs.fileno())], env=env,
                            pass_fds=(theirs.fileno(),), cwd=REPO)
    theirs.close()
    try:
        ours.settimeout(30)
        message = json.loads(ours.makefile("rb").readline())
        assert "no TIDAL_WARM_SLOT placeholder" in message["unfit"]
        assert proc.wait(30) == 1
    finally:
        ours.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
