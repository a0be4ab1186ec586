"""The local backend's warm pool: model-server processes started ahead (imports done, no model), each handed
exactly one replica on assignment. What to keep started and which one to hand out: `warmpool_decide`.

A replica from the pool skips the interpreter's start and the imports (onnxruntime, and TensorFlow for a
SavedModel): what is left is listening, loading the model and its warmup. The processes are
`tidal.server.warm`; see there why they are separate processes and not forks of one parent. A pool
process serves nothing until it is assigned, and serves what it is assigned only: it turns into a plain
`tidal model-server` with the assignment's arguments. One that dies is replaced (with a growing pause
when they keep dying before they are ready); `close()` ends them all, and one whose control plane went
away exits by itself (its channel closes).

Kept: `size` idle processes per runtime in use. ONNX is always in use; TensorFlow once this home served
a SavedModel (remembered in run/warm-pool.json), since a process with TensorFlow imported costs hundreds
of megabytes. Turned off with TIDAL_WARM_POOL=off (or 0); TIDAL_WARM_POOL=N keeps N per runtime. The
pool's processes and states are in run/warm-pool.json; `LocalBackend.warm_pool_status()` adds their memory.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tidal.backends.warmpool_decide import (POOL_ENV, SLOT_WIDTH, WARM_HOME_ENV, Deaths, Flavour, PoolView, Refill,
                                            SlotState, SlotView, WarmPoolSettings, backoff, choose, model_flavour,
                                            plan_refill, unfit)
from tidal.files import write_private
from tidal.server.warm import REPLICA_ENV, SLOT_ENV, SLOT_FILL

log = logging.getLogger(__name__)

__all__ = ["POOL_ENV", "WARM_HOME_ENV", "Deaths", "Flavour", "PoolView", "Refill", "SlotState", "SlotView",
           "WarmPool", "WarmPoolSettings", "backoff", "choose", "memory", "model_flavour", "plan_refill", "unfit"]


@dataclass
class _Slot:
    id: int
    flavour: Flavour
    proc: subprocess.Popen
    channel: socket.socket
    started_at: float
    state: SlotState = SlotState.STARTING
    buffer: bytes = b""

    def view(self) -> SlotView:
        return SlotView(self.id, self.flavour, self.state)


class WarmPool:
    """Build with the home and interpreter; `start()` once, `take()` per replica, `close()` at the end."""

    def __init__(self, home_root: Path, python: str, settings: WarmPoolSettings, *, cuda: str | None = None,
                 tensorflow_installed: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.home_root = Path(home_root)
        self.python = python
        self.settings = settings
        self.cuda = cuda  # what the pool's processes see as CUDA_VISIBLE_DEVICES (None: unset)
        self.clock = clock
        if tensorflow_installed is None:
            import importlib.util
            tensorflow_installed = importlib.util.find_spec("tensorflow") is not None
        self._tensorflow = tensorflow_installed
        self._flavours = {Flavour.ONNX}
        self._slots: dict[int, _Slot] = {}
        self._next_id = 0
        self._last_assigned: dict[Flavour, float] = {}
        self._deaths: dict[Flavour, Deaths] = {}
        self._retired: list[socket.socket] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        self._disabled: str | None = None
        self._thread: threading.Thread | None = None

    @property
    def memory_file(self) -> Path:
        return self.home_root / "run" / "warm-pool.json"

    @property
    def output_file(self) -> Path:
        return self.home_root / "logs" / "warm-pool.out"

    def start(self) -> None:
        """Start the processes and the thread that keeps them (idempotent)."""
        if self._thread is not None or self._closed:
            return
        try:
            remembered = json.loads(self.memory_file.read_text()).get("flavours", [])
        except (OSError, ValueError, AttributeError):
            remembered = []
        for name in remembered:
            if name in {f.value for f in Flavour}:
                self._use(Flavour(name))
        self._thread = threading.Thread(target=self._keep, name="warm-pool", daemon=True)
        self._thread.start()

    def _use(self, flavour: Flavour) -> None:
        """Keep `flavour` warm from now on (TensorFlow only where it is installed)."""
        if flavour is Flavour.TENSORFLOW and not self._tensorflow:
            return
        with self._lock:
            new = flavour not in self._flavours
            self._flavours.add(flavour)
        if new:
            self._poke()  # the keeper starts it, and writes it down for the next start

    # -- assignment (the control loop's thread)
    def take(self, flavour: Flavour | None, replica: str, argv: list[str], env: dict[str, str],
             output: Path) -> subprocess.Popen | None:
        """Hand `replica` to an idle process: it runs `tidal <argv>` with `env` added, printing to `output`.
        The process once it carries the replica's marker, or None (start it cold)."""
        if flavour is not None:
            self._use(flavour)
        self._poke()
        with self._lock:
            if self._closed or self._disabled:
                return None
            chosen = choose(tuple(s.view() for s in self._slots.values()), flavour)
            slot = self._slots.pop(chosen) if chosen is not None else None
            if slot is not None:
                self._last_assigned[slot.flavour] = self.clock()
        if slot is None:
            return None
        try:
            return self._assign(slot, replica, argv, env, output)
        finally:
            with self._lock:
                self._retired.append(slot.channel)  # closed by the keeper thread, which may be selecting on it
            self._poke()

    def _assign(self, slot: _Slot, replica: str, argv: list[str], env: dict[str, str],
                output: Path) -> subprocess.Popen | None:
        message = {"replica": replica, "argv": argv, "env": env, "output": str(output)}
        reply = b""
        try:
            slot.channel.settimeout(self.settings.assign_timeout_seconds)
            slot.channel.sendall(json.dumps(message).encode() + b"\n")
            while not reply.endswith(b"\n"):
                chunk = slot.channel.recv(4096)
                if not chunk:
                    break
                reply += chunk
            answer = json.loads(reply) if reply else {}
        except (OSError, ValueError):
            answer = {}
        if answer.get("ok") is not True:
            log.warning("warm pool: process %d did not take replica %s (%s); starting it cold", slot.proc.pid,
                        replica, answer.get("error") or "no answer")
            _end(slot.proc)
            return None
        log.info("replica %s from the warm pool: process %d (%s imported ahead)", replica, slot.proc.pid,
                 slot.flavour)
        return slot.proc

    # -- keeping the pool (its own thread)
    def _keep(self) -> None:
        published: tuple | None = None
        while not self._closed:
            try:
                published = self._keep_once(published)
            except Exception:  # a bad pass must not end the pool's upkeep
                log.exception("warm pool: upkeep pass failed")
                time.sleep(1.0)

    def _keep_once(self, published: tuple | None) -> tuple | None:
        """One pass: start what is missing, then wait for a process to speak or die, or for a delay to end."""
        with self._lock:
            if self._closed:
                return published
            for channel in self._retired:
                channel.close()
            self._retired.clear()
            view = PoolView(tuple(s.view() for s in self._slots.values()), frozenset(self._flavours),
                            dict(self._last_assigned), dict(self._deaths))
            plan = (plan_refill(view, self.clock(), self.settings) if not self._disabled
                    else Refill((), None))
        for command in plan.spawn:
            self._spawn(command.flavour)
        with self._lock:
            channels = {s.channel.fileno(): s for s in self._slots.values()}
        published = self._publish(published)
        timeout = None if plan.next_at is None else max(0.0, plan.next_at - self.clock())
        try:
            readable, _, _ = select.select([self._wake_r, *channels], [], [], timeout)
        except (OSError, ValueError):
            return published  # a channel was closed meanwhile: look again with the current ones
        if self._wake_r in readable:
            os.read(self._wake_r, 4096)
        for fd in readable:
            if fd in channels:
                self._hear(channels[fd])
        return published

    def _hear(self, slot: _Slot) -> None:
        with self._lock:
            if self._slots.get(slot.id) is not slot:
                return  # taken meanwhile: its answer is the assignment's
            try:
                chunk = slot.channel.recv(4096)
            except OSError:
                chunk = b""
            slot.buffer += chunk
            if chunk and not slot.buffer.endswith(b"\n"):
                return
            try:
                message = json.loads(slot.buffer) if chunk else {}
            except ValueError:
                message = {"unfit": "it said something that is not JSON"}
            slot.buffer = b""
            if message.get("ready") is True and slot.state is SlotState.STARTING:
                slot.state = SlotState.WARM
                self._deaths.pop(slot.flavour, None)
                log.info("warm pool: %s process %d ready after %.2f s (%s resident)", slot.flavour,
                         slot.proc.pid, self.clock() - slot.started_at, _mib(memory(slot.proc.pid)["rss"]))
                return
            del self._slots[slot.id]
            if "unfit" in message:
                self._disabled = str(message["unfit"])
            else:  # it went away (killed, out of memory, a broken install) or spoke out of turn
                previous = self._deaths.get(slot.flavour, Deaths())
                self._deaths[slot.flavour] = Deaths(previous.count + 1, self.clock())
        slot.channel.close()
        if "unfit" in message:
            log.warning("warm pool off: a pool process %s; replicas start cold", self._disabled)
        else:
            log.warning("warm pool: %s process %d ended (%s); it is replaced", slot.flavour, slot.proc.pid,
                        _exit_status(slot.proc))
        _end(slot.proc)

    def _spawn(self, flavour: Flavour) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        env.pop(REPLICA_ENV, None)
        env.pop("CUDA_VISIBLE_DEVICES", None)
        if self.cuda is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.cuda
        env.update({"TIDAL_HOME": str(self.home_root), WARM_HOME_ENV: str(self.home_root),
                    SLOT_ENV: SLOT_FILL * SLOT_WIDTH})
        argv = [self.python, "-P", "-m", "tidal.server.warm", "--channel-fd", str(theirs.fileno()),
                "--runtimes", ",".join(flavour.runtimes)]
        try:
            self.output_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.output_file, "ab") as out:
                # A session of its own, as a replica started cold: once assigned it outlives the control plane.
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        env=env, pass_fds=(theirs.fileno(),), start_new_session=True,
                                        close_fds=True)
        except OSError as exc:
            ours.close()
            with self._lock:
                previous = self._deaths.get(flavour, Deaths())
                self._deaths[flavour] = Deaths(previous.count + 1, self.clock())
            log.warning("warm pool: cannot start a %s process: %s", flavour, exc)
            return
        finally:
            theirs.close()
        with self._lock:
            if self._closed:
                ours.close()
                _end(proc)
                return
            self._next_id += 1
            self._slots[self._next_id] = _Slot(self._next_id, flavour, proc, ours, self.clock())

    def _publish(self, last: tuple | None) -> tuple:
        """Write run/warm-pool.json when the pool changed: the runtimes in use (read again at the next
        start) and its processes, for `cat` and for benchmarks that wait for a warm pool."""
        with self._lock:
            now = (tuple(sorted(self._flavours)), tuple((s.proc.pid, str(s.flavour), str(s.state))
                                                         for s in self._slots.values()), self._disabled)
        if now != last:
            doc = {"flavours": list(now[0]), "off_because": now[2],
                   "processes": [{"pid": pid, "flavour": f, "state": st} for pid, f, st in now[1]]}
            try:
                write_private(self.memory_file, json.dumps(doc) + "\n")
            except OSError as exc:
                log.warning("warm pool: cannot write %s: %s", self.memory_file, exc)
        return now

    def _poke(self) -> None:
        if self._closed:
            return  # its pipe is closed, and the descriptor may be another file's by now
        try:
            os.write(self._wake_w, b".")
        except OSError:
            pass

    # -- reporting and the end
    def status(self) -> dict:
        """The pool's processes and what they cost in memory (resident, and proportional: shared pages split)."""
        with self._lock:
            slots = list(self._slots.values())
            disabled = self._disabled
            flavours = sorted(self._flavours)
        procs = [{"pid": s.proc.pid, "runtimes": list(s.flavour.runtimes), "state": str(s.state),
                  **memory(s.proc.pid)} for s in slots]
        return {"enabled": self.settings.enabled and not disabled, "off_because": disabled,
                "size_per_runtime": self.settings.size, "runtimes_in_use": flavours,
                "processes": procs, "rss_bytes": sum(p["rss"] for p in procs),
                "pss_bytes": sum(p["pss"] for p in procs)}

    def close(self) -> None:
        """End every process not yet assigned, and the keeper thread."""
        with self._lock:
            self._closed = True
            slots = list(self._slots.values())
            self._slots.clear()
            retired, self._retired = self._retired, []
        self._poke()
        if self._thread is not None:
            self._thread.join(5)
        for slot in slots:
            slot.channel.close()
            _end(slot.proc)
        for channel in retired:
            channel.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


def _end(proc: subprocess.Popen) -> None:
    """Kill and reap a pool process: it holds no model and no request."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def _exit_status(proc: subprocess.Popen) -> str:
    try:
        code = proc.wait(2)
    except subprocess.TimeoutExpired:
        return "its channel closed"
    return f"signal {-code}" if code < 0 else f"status {code}"


def memory(pid: int) -> dict[str, int]:
    """A process's resident and proportional set sizes in bytes (0 where /proc does not say)."""
    out = {"rss": 0, "pss": 0}
    for path, key, name in ((f"/proc/{pid}/status", "VmRSS:", "rss"), (f"/proc/{pid}/smaps_rollup", "Pss:", "pss")):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        out[name] = int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            pass
    return out


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"
