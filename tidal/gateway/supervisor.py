"""Runs a control plane's gateway as its own process: start or adopt it, restart it when it dies, stop it last.

The gateway lives in a session of its own, so a control plane killed with SIGKILL leaves
it serving; the next control plane adopts it (same pid and start time in the run file,
this home's marker in its environment, and it answers the token's handshake). The
control plane binds the gateway's port itself and hands the socket down: while the
gateway restarts, new connections wait in the socket's queue instead of being refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pydantic import ValidationError

from tidal.backends.local import REPLICA_ENV, proc_environ, proc_start_time
from tidal.errors import FailedPrecondition
from tidal.files import write_private
from tidal.gateway.client import GatewayClient, connect_host
from tidal.gateway.config import GatewayEngine
from tidal.gateway.control import HELLO, save_routes
from tidal.gateway.supervision import RestartRecord, RunRecord, StartAction, describe_exit, plan_start, restart_delay
from tidal.http.client import ClientError, HttpClient
from tidal.logs import child_log_env, child_output, last_line

log = logging.getLogger(__name__)

GATEWAY_ENV = "TIDAL_GATEWAY_HOME"  # marks a gateway process with the home it serves


@dataclass(frozen=True)
class GatewayFiles:
    home: Path
    run_file: Path
    routes_file: Path
    token_file: Path
    log_file: Path
    exit_file: Path  # the gateway's last words, for a control plane that is not its parent

    @classmethod
    def in_home(cls, root: Path) -> "GatewayFiles":
        return cls(root, root / "run" / "gateway.json", root / "run" / "gateway-routes.json", root / "token",
                   root / "logs" / "gateway.log", root / "run" / "gateway-exit.json")


def read_run(path: Path) -> RunRecord | None:
    try:
        return RunRecord.model_validate_json(path.read_text())
    except (OSError, ValidationError, ValueError):
        return None


def is_ours(home: Path, pid: int, proc_start: int | None = None) -> bool:
    """Whether `pid` is a live gateway process of this home (and the one that started at `proc_start`)."""
    start = proc_start_time(pid)
    if start is None or (proc_start is not None and start != proc_start):
        return False
    return proc_environ(pid).get(GATEWAY_ENV) == str(home)


def gateway_pids(home: Path) -> list[int]:
    """Every live process marked as this home's gateway."""
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and is_ours(home, int(e))]


def _listen(host: str, port: int, shared: bool = False) -> socket.socket:
    """The gateway's listening socket; `shared`: in an SO_REUSEPORT group its workers join (same user only)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(4096)
    except OSError as exc:
        sock.close()
        raise FailedPrecondition(f"cannot listen on {host}:{port} for the gateway: {exc.strerror or exc} "
                                 f"(choose another with --gateway-port)") from None
    return sock


class GatewaySupervisor:
    """Build with the home's files, the address and a client; `await start()`, then it watches; `await stop()`."""

    def __init__(self, files: GatewayFiles, host: str, port: int, token: str, client: GatewayClient, *,
                 on_event: Callable[[str, str, str], None], python: str = sys.executable,
                 start_timeout: float = 20.0, stop_timeout: float = 40.0,
                 wall: Callable[[], float] = time.time, workers: int = 1,
                 engine: GatewayEngine = GatewayEngine.PYTHON) -> None:
        self.files = files
        self.workers = workers  # processes serving the port (see tidal.gateway.workers)
        self.engine = engine  # EDGE: the compiled data plane in front (see tidal.gateway.edge)
        self.host = host
        self.port = port  # 0: any free port, the first time
        self.client = client
        self._token = token
        self._on_event = on_event
        self._python = python
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._wall = wall
        self._record: RunRecord | None = None
        self._proc: subprocess.Popen | None = None  # when the gateway is this control plane's child
        self._standby: tuple[subprocess.Popen, socket.socket] | None = None  # the next gateway, and its channel
        self._listener: socket.socket | None = None
        self._exits: list[float] = []
        self.adopted = False  # the gateway outlived the previous control plane
        self._task: asyncio.Task | None = None
        self._http = HttpClient(connect_timeout=1.0, max_idle_per_host=1)
        client.describe = self.describe

    # -- lifecycle
    async def start(self) -> None:
        """Adopt this home's live gateway, or start one; it serves the client's routes before this returns."""
        rec = read_run(self.files.run_file)
        alive = rec is not None and is_ours(self.files.home, rec.pid, rec.proc_start)
        answers = alive and await self._hello(rec.port, rec.pid, 2.0)
        action, why = plan_start(rec, alive, answers, self.port,
                                 self._last_words(rec.pid) if rec is not None and not alive else None)
        if action is StartAction.ADOPT:
            self._record = rec
            self.port = rec.port
            self.adopted = True
            self._kill_strays(keep=rec.pid)
            self._spawn_standby()
            self._on_event("GatewayAdopted", "gateway", f"process {rec.pid} on port {rec.port} is still serving: "
                                                        f"adopted")
        else:
            if action is StartAction.REPLACE:
                await self._terminate(rec.pid, rec.proc_start)
            self._kill_strays(keep=None)
            if rec is None:
                await self._launch()
                self._on_event("GatewayStarted", "gateway", f"process {self._record.pid} serves on port {self.port}")
            else:
                await self._launch(rec.restarts + 1, RestartRecord(time=self._wall(), reason=why))
                self._on_event("GatewayRestarted", "gateway", f"{why}; process {self._record.pid} serves on port "
                                                              f"{self.port}")
        if not self.client.attach(self.port):
            log.warning("the gateway took no routes yet; they are sent again when it answers")
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def release(self) -> None:
        """Stop watching and leave the gateway serving its routes (a control plane that failed to start)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        self._drop_standby()
        self.client.detach()
        self._http.close()

    async def stop(self) -> None:
        """Stop the gateway: it takes no new requests and finishes those in flight (the replicas go after)."""
        await self.release()
        if self._listener is not None:  # the gateway's own copy stays open until it has drained
            self._listener.close()
            self._listener = None
        if self._record is not None:
            await self._terminate(self._record.pid, self._record.proc_start)
        self.client.close()
        try:
            self.files.run_file.unlink()
        except FileNotFoundError:
            pass

    def describe(self) -> dict:
        rec = self._record
        last = rec.last_restart if rec else None
        return {"mode": "process", "url": f"http://{self.host}:{self.port}", "pid": rec.pid if rec else None,
                "up_since": rec.started_at if rec else None, "restarts": rec.restarts if rec else 0,
                "last_restart": last.model_dump() if last else None, "reachable": self.client.reachable,
                "engine": self.engine.value}

    # -- inside
    def _spawn_standby(self) -> None:
        """Start the next gateway now, idle until it is needed: a restart then skips the interpreter's start."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ, TIDAL_HOME=str(self.files.home), **{GATEWAY_ENV: str(self.files.home)},
                   **child_log_env(self.files.log_file))
        env.pop(REPLICA_ENV, None)
        argv = [self._python, "-P", "-m", "tidal.gateway.process", "--activate-fd", str(theirs.fileno()),
                "--host", self.host, "--token-file", str(self.files.token_file),
                "--routes-file", str(self.files.routes_file), "--exit-file", str(self.files.exit_file),
                "--workers", str(self.workers), "--engine", self.engine.value]
        self.files.log_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            # It logs to its own file, rotated by size; what it prints outside logging goes beside it.
            with open(child_output(self.files.log_file), "ab") as out:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        env=env, pass_fds=(theirs.fileno(),), start_new_session=True, close_fds=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._standby = (proc, ours)

    def _drop_standby(self) -> None:
        """End the standby: it serves nothing yet, so it has nothing to finish."""
        if self._standby is not None:
            proc, channel = self._standby
            self._standby = None
            channel.close()
            proc.kill()
            proc.wait()

    async def _launch(self, restarts: int = 0, last_restart: RestartRecord | None = None) -> None:
        """Hand the listening socket to the standby (a new one if it is gone); it serves the client's routes."""
        if self._listener is None:
            self._listener = _listen(self.host, self.port, shared=self.workers > 1)
        self.port = self._listener.getsockname()[1]
        # The routes the control plane wants now: the new process serves them from its first request.
        save_routes(self.files.routes_file, self.client.routes(), self.host, self.port)
        for _ in range(2):
            if self._standby is None or self._standby[0].poll() is not None:
                self._drop_standby()
                self._spawn_standby()
            proc, channel = self._standby
            try:
                socket.send_fds(channel, [b"go"], [self._listener.fileno()])
                break
            except OSError:  # it died just now: the second standby is a fresh one
                self._drop_standby()
        else:
            raise FailedPrecondition("the gateway did not start: it did not take the listening socket")
        self._standby = None
        channel.close()
        self._proc = proc
        self._record = RunRecord(pid=proc.pid, proc_start=proc_start_time(proc.pid) or 0, host=self.host,
                                 port=self.port, started_at=self._wall(), restarts=restarts, last_restart=last_restart)
        write_private(self.files.run_file, self._record.model_dump_json())
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if await self._hello(self.port, proc.pid, 2.0):
                self._spawn_standby()
                return
            await asyncio.sleep(0.05)
        why = self._log_tail() or f"see {self.files.log_file}"
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            why = f"it did not answer within {self._start_timeout:.0f}s ({why})"
        raise FailedPrecondition(f"the gateway did not start: {why}")

    async def _hello(self, port: int, pid: int, timeout: float) -> bool:
        """The token's handshake: only this home's gateway answers it, with its own pid."""
        try:
            resp = await self._http.request("GET", connect_host(self.host), port, HELLO,
                                            headers=[("Authorization", f"Bearer {self._token}")], timeout=timeout)
            return resp.status == 200 and resp.json().get("pid") == pid
        except (ClientError, OSError, ValueError, AttributeError):
            return False

    async def _watch(self) -> None:
        while True:
            code = await self._exited()
            now = time.monotonic()
            self._exits.append(now)
            self.client.detach()
            old = self._record
            reason = (f"process {old.pid} {describe_exit(code, self._last_words(old.pid))}" if old
                      else "the gateway could not be started")
            log.warning("the gateway %s; starting it again", reason)
            delay = restart_delay(self._exits, now)
            if delay:
                await asyncio.sleep(delay)
            try:
                await self._launch(restarts=(old.restarts if old else 0) + 1,
                                   last_restart=RestartRecord(time=self._wall(), reason=reason))
            except Exception as exc:  # counted as another exit: the next try waits longer
                log.error("the gateway could not be restarted: %s", exc)
                self._on_event("GatewayRestartFailed", "gateway", f"{reason}; starting it again failed: {exc}")
                continue
            self.client.attach(self.port)
            self._on_event("GatewayRestarted", "gateway",
                           f"{reason}; process {self._record.pid} serves its last {len(self.client.routes())} "
                           f"service route(s) on port {self.port} again, {time.monotonic() - now:.1f}s later")

    async def _exited(self) -> int | None:
        """Wait until the gateway process exits; its exit status when it is this control plane's child."""
        rec, proc = self._record, self._proc
        if rec is None or (proc is not None and proc.poll() is not None):
            return proc.returncode if proc is not None else None
        try:
            pidfd = os.pidfd_open(rec.pid)
        except ProcessLookupError:
            return proc.wait() if proc is not None else None
        except (AttributeError, OSError):  # no pidfd here (old kernel): look twice a second
            while (proc.poll() is None) if proc is not None else is_ours(self.files.home, rec.pid, rec.proc_start):
                await asyncio.sleep(0.5)
            return proc.returncode if proc is not None else None
        try:
            # Opened after the fact: the pid may since name another process.
            if proc is not None or is_ours(self.files.home, rec.pid, rec.proc_start):
                loop = asyncio.get_running_loop()
                done = loop.create_future()
                loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
                try:
                    await done
                finally:
                    loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)
        return proc.wait() if proc is not None else None

    async def _terminate(self, pid: int, proc_start: int) -> None:
        """SIGTERM (the gateway drains), SIGKILL if it has not exited in time."""
        if not is_ours(self.files.home, pid, proc_start):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + self._stop_timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                if self._proc.poll() is not None:
                    return
            elif not is_ours(self.files.home, pid, proc_start):
                return
            await asyncio.sleep(0.05)
        log.warning("the gateway (process %d) did not stop within %.0fs: killing it", pid, self._stop_timeout)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self._proc is not None and self._proc.pid == pid:
            self._proc.wait()

    def _kill_strays(self, keep: int | None) -> None:
        """A gateway of this home that no run file names (started just before a crash) would hold the port."""
        for pid in gateway_pids(self.files.home):
            if pid != keep:
                log.warning("killing stray gateway process %d", pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _last_words(self, pid: int) -> str | None:
        try:
            said = json.loads(self.files.exit_file.read_text())
        except (OSError, ValueError):
            return None
        return said.get("reason") if isinstance(said, dict) and said.get("pid") == pid else None

    def _log_tail(self) -> str:
        return last_line(child_output(self.files.log_file), self.files.log_file, prefix="tidal gateway: error: ")


def stop_orphan(files: GatewayFiles, timeout: float = 40.0) -> int | None:
    """`tidal down` with no control plane: stop the gateway it left serving. Its pid, or None when there was none."""
    rec = read_run(files.run_file)
    pids = gateway_pids(files.home)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(is_ours(files.home, p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if is_ours(files.home, pid):
            _signal(pid, signal.SIGKILL)
    try:
        files.run_file.unlink()
    except FileNotFoundError:
        pass
    if not pids:
        return None
    return rec.pid if rec is not None and rec.pid in pids else pids[0]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
