"""A warm model-server process: interpreter started and imports done, no model; it becomes one replica's
`tidal model-server` when the local backend's warm pool (`tidal.backends.warmpool`) assigns it one.

    python -P -m tidal.server.warm --channel-fd N --runtimes onnx[,tensorflow]

A process per slot rather than a pre-imported parent that forks: onnxruntime and TensorFlow own thread
pools and locks, and a fork after any runtime thread started copies locks held by threads the child does
not have. A process that waits on a Unix socket has no such hazard; it costs what the replica it becomes
costs, ahead of time.

The channel carries one JSON line each way:
  warm -> pool  {"ready": true, "imports_s": 0.41}, or {"unfit": "why"} when it cannot become a replica
  pool -> warm  {"replica": ID, "argv": ["model-server", ...], "env": {...}, "output": PATH}
  warm -> pool  {"ok": true} once it carries the replica's marker, then it runs `tidal model-server`.
End of file before an assignment means the control plane went away: it exits 0, having served nothing.

The replica's marker (TIDAL_REPLICA_ID in /proc/PID/environ) is how the local backend recognises its
replicas, after a restart too. A process's environ file is the memory its environment was started in, so
the pool starts this one with a placeholder (TIDAL_WARM_SLOT=xxx...) that is rewritten there, in place,
into the replica's marker on assignment: from then on it is indistinguishable from a replica started cold.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import socket
import sys
import time

REPLICA_ENV = "TIDAL_REPLICA_ID"
SLOT_ENV = "TIDAL_WARM_SLOT"
SLOT_FILL = "x"


def _environ_region() -> tuple[int, int]:
    """Where this process's initial environment lies in its memory (/proc/self/stat fields 50 and 51)."""
    with open("/proc/self/stat") as f:
        stat = f.read()
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[47]), int(fields[48])


def _find_slot() -> tuple[int, int]:
    """(address, length) of the placeholder entry `TIDAL_WARM_SLOT=xxx...` in the initial environment."""
    start, end = _environ_region()
    raw = ctypes.string_at(start, end - start)
    key = SLOT_ENV.encode() + b"="
    at = 0 if raw.startswith(key) else raw.find(b"\0" + key) + 1
    if at == 0 and not raw.startswith(key):
        raise RuntimeError(f"no {SLOT_ENV} placeholder in this process's environment")
    length = raw.index(b"\0", at) - at
    return start + at, length


def take_marker(slot: tuple[int, int], replica: str) -> None:
    """Rewrite the placeholder into `TIDAL_REPLICA_ID=<replica>`: padding after it reads as no variable."""
    address, length = slot
    entry = f"{REPLICA_ENV}={replica}".encode()
    if len(entry) + 1 > length:
        raise ValueError(f"replica id {replica!r} is longer than the slot holds")
    ctypes.memmove(address, entry + b"\0" + b" " * (length - len(entry) - 1), length)


def preload(runtimes: list[str]) -> None:
    """Import what `tidal model-server` imports before its first model (and the runtimes asked for)."""
    if "tensorflow" in runtimes:
        # First: TF Serving's protos then come from the real tensorflow package, not a placeholder.
        try:
            import tidal.models.runtimes.tensorflow  # noqa: F401
        except ImportError:
            pass
    try:
        import onnxruntime  # noqa: F401

        import tidal.models.runtimes.onnx  # noqa: F401
    except ImportError:
        pass
    try:
        import onnx  # noqa: F401  (a classifier's labels are read with it at load)
    except ImportError:
        pass
    import tidal.cli  # noqa: F401
    import tidal.http.server  # noqa: F401
    import tidal.logs  # noqa: F401
    import tidal.models.manager  # noqa: F401
    import tidal.server.app  # noqa: F401
    import tidal.server.dataplane  # noqa: F401
    import tidal.server.large  # noqa: F401
    import tidal.server.main  # noqa: F401
    import tidal.server.metrics  # noqa: F401
    from tidal.server import tfs_protos
    try:
        import tidal.server.grpc_api  # noqa: F401
        if tfs_protos.available():
            tfs_protos.load()
    except ImportError:
        pass
    try:
        import uvloop  # noqa: F401
    except ImportError:
        pass


def _send(sock: socket.socket, message: dict) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


def _assume(assignment: dict, slot: tuple[int, int]) -> list[str]:
    """Become the assigned replica: its marker, its output file and its environment; its argv back."""
    replica, argv, env, output = (assignment["replica"], assignment["argv"], assignment["env"],
                                  assignment["output"])
    if not (isinstance(argv, list) and argv[:1] == ["model-server"] and isinstance(env, dict)):
        raise ValueError("an assignment names model-server's argv and an environment")
    take_marker(slot, replica)
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.pop(SLOT_ENV, None)
    os.environ.update({str(k): str(v) for k, v in env.items()})
    os.environ[REPLICA_ENV] = replica
    return [str(a) for a in argv]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tidal.server.warm", description=__doc__.splitlines()[0])
    p.add_argument("--channel-fd", type=int, required=True, help="the Unix socket to the warm pool")
    p.add_argument("--runtimes", default="onnx", help="runtimes to import ahead (onnx, tensorflow)")
    args = p.parse_args(argv)
    sock = socket.socket(fileno=args.channel_fd)
    started = time.monotonic()
    try:
        slot = _find_slot()
    except (OSError, RuntimeError, ValueError, IndexError) as exc:
        _send(sock, {"unfit": f"cannot carry a replica's marker: {exc}"})
        return 1
    preload([r for r in args.runtimes.split(",") if r])
    # What was imported lives as long as the process: frozen now, the model server's own collection once its
    # model is loaded has only the model's objects to go through, not TensorFlow's (most of a second on a
    # busy machine, while the first request waits).
    gc.collect()
    gc.freeze()
    try:
        _send(sock, {"ready": True, "imports_s": round(time.monotonic() - started, 3)})
        line = sock.makefile("rb").readline()
    except OSError:
        return 0
    if not line:
        return 0  # the pool closed the channel (the control plane stopped or went away): nothing to serve
    try:
        command = _assume(json.loads(line), slot)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        try:
            _send(sock, {"error": f"{type(exc).__name__}: {exc}"})
        except OSError:
            pass
        return 1
    try:
        _send(sock, {"ok": True})
    except OSError:
        return 0  # the pool gave up waiting and will not route to this process: it must not serve
    sock.close()
    import tidal.cli

    sys.argv = ["tidal", *command]
    return tidal.cli.main(command)


if __name__ == "__main__":
    sys.exit(main())
