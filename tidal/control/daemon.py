"""The control-plane process: store, API and reconcile loop, with the gateway as its supervised process; `tidal up`.

The gateway runs as a process of its own by default (`GatewayMode.PROCESS`): it keeps
serving with its last routes while the control plane is down or restarting. Tests that
want one process can build the control plane with `GatewayMode.IN_PROCESS`.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tidal.backends.kubernetes.lease import LeaderElection
from tidal.backends.local import LocalBackend
from tidal.backends.warmpool import WarmPoolSettings
from tidal.capacity.catalog import load_catalog, migrate_pools
from tidal.control.api import Api
from tidal.control.home import Home
from tidal.control.reconciler import ControlSettings, Reconciler
from tidal.control.store import Store
from tidal.control.timescale import ScaledClock
from tidal.errors import FailedPrecondition
from tidal.gateway.config import GatewayEngine
from tidal.http.hosts import HostAllowList
from tidal.http.server import HttpServer
from tidal.logs import child_log_env, child_output, last_line

log = logging.getLogger(__name__)

DEFAULT_API_PORT = 8470
DEFAULT_GATEWAY_PORT = 8501  # the reference procedure's Ingress port for the REST API


class GatewayMode(str, Enum):
    PROCESS = "process"        # its own supervised process (what `tidal up` runs)
    IN_PROCESS = "in-process"  # inside the control plane: it goes down with it


class DaemonOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    api_port: int | None = Field(default=None, ge=0, le=65535)
    gateway_port: int | None = Field(default=None, ge=0, le=65535)
    time_factor: float | None = Field(default=None, gt=0, le=1000)
    catalog: str | None = None
    gateway_mode: GatewayMode = GatewayMode.PROCESS
    # Processes serving the gateway's port (`tidal up --gateway-workers`); see tidal.gateway.workers.
    gateway_workers: int = Field(default=1, ge=1, le=64)
    # What serves the gateway's port (`tidal up --gateway-engine`); see tidal.gateway.edge.
    gateway_engine: GatewayEngine = GatewayEngine.PYTHON
    settings: ControlSettings = Field(default_factory=ControlSettings)
    # Set: act only while holding a Kubernetes Lease (`tidal up --leader-elect`); see `_run_as_leader`.
    leader_election: LeaderElection | None = None


class ControlPlane:
    """Build with a home and options; `await start()`, `await serve()` until stopped, `await stop()`."""

    def __init__(self, home: Home, options: DaemonOptions) -> None:
        self.home = home
        self.options = options
        self.store: Store | None = None
        self.reconciler: Reconciler | None = None
        self.gateway = None  # a `Gateway` in process, else a `GatewayClient` to the gateway process
        self.gateway_supervisor = None
        self.api_server: HttpServer | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._loop_task: asyncio.Task | None = None
        self._lock_fd: int | None = None
        self.cluster = None  # a tidal.backends.kubernetes.wiring.Cluster on a Kubernetes context

    def _meta_or(self, key: str, given, default, cast):
        """A setting given now wins and is remembered; else the remembered one; else the default."""
        if given is not None:
            self.store.set_meta(key, repr(given))
            return given
        kept = self.store.get_meta(key)
        return cast(kept) if kept is not None else default

    async def start(self) -> None:
        os.umask(0o077)  # the database, logs and run files are the owner's alone
        self.home.ensure()
        self._lock_fd = _lock(self.home.pid_file)
        catalog = load_catalog(self.options.catalog or self.home.catalog_file)
        self.cluster = _cluster(self.home, catalog)
        # On a Kubernetes context the state lives in the cluster (a ConfigMap), not in the home's SQLite file.
        self.store = self.cluster.store if self.cluster is not None else Store(self.home.db)
        factor = self._meta_or("time_factor", self.options.time_factor, 1.0, float)
        anchors = self.store.get_meta("clock_anchors")
        if anchors is not None and float(self.store.get_meta("clock_factor") or "nan") == factor:
            real, virtual = (float(x) for x in anchors.split(","))
            clock = ScaledClock(factor, real, virtual)
        else:
            # A new factor restarts virtual time from the last virtual instant, so it never goes back.
            now = time.time()
            clock = ScaledClock(factor, now, max(now, _last_time(self.store)))
            self.store.set_meta("clock_anchors", f"{clock.anchor_real!r},{clock.anchor_virtual!r}")
            self.store.set_meta("clock_factor", repr(factor))
        token = self.home.token(create=True)
        if self.cluster is not None:
            backend, catalog = self.cluster.backend, self.cluster.catalog() or catalog
        else:
            backend = LocalBackend(self.home.root, host=self.options.host,
                                   warm_pool=WarmPoolSettings.from_env(os.environ))
        migrate_pools(self.store, catalog)  # pools stored before they had a region are placed in one, once
        gw_port = self._meta_or("gateway_port", self.options.gateway_port, DEFAULT_GATEWAY_PORT, int)
        api_port = self._meta_or("api_port", self.options.api_port, DEFAULT_API_PORT, int)
        self._wake = asyncio.Event()
        self.gateway = self._make_gateway(gw_port, token)
        self.reconciler = Reconciler(self.store, backend, self.gateway, catalog, clock, self.home,
                                     self.options.settings, real_seconds=clock.real)
        # Adopt the replicas still running and route to them before the gateway takes its first request
        # (a gateway process that outlived the control plane gets the new table as soon as it is adopted).
        self.reconciler.adopt()
        self.reconciler.sync_gateway()
        await self._start_gateway(gw_port, token)
        try:
            if gw_port == 0:
                self.store.set_meta("gateway_port", repr(self.gateway.port))
            gateway_url = f"http://{self.options.host}:{self.gateway.port}"
            console = _console_handler(self)
            api = Api(self.reconciler, token, gateway_url, self._wake.set, console)
            # Only the names this API serves (and TIDAL_ALLOWED_HOSTS): a page on another site that rebinds
            # its own name to this address gets 421, not the console or the API.
            self.api_server = HttpServer(self._persisting(api.handle), self.options.host, api_port,
                                         allowed_hosts=HostAllowList.for_bind(self.options.host, env=os.environ))
            try:
                await self.api_server.start()
            except OSError as exc:
                raise FailedPrecondition(f"cannot listen on {self.options.host}:{api_port} for the API: "
                                         f"{exc.strerror or exc} (choose another with --port)") from None
            if api_port == 0:
                self.store.set_meta("api_port", repr(self.api_server.port))
            self.reconciler.event("ControlPlaneStarted", "control-plane",
                                  f"API http://{self.options.host}:{self.api_server.port}, gateway {gateway_url}, "
                                  f"time factor {factor:g}" + (f", Kubernetes context {self.cluster.context.name} "
                                                               f"(namespace {self.cluster.context.namespace})"
                                                               if self.cluster is not None else ""))
            self.home.write_address({"api": f"http://{self.options.host}:{self.api_server.port}",
                                     "gateway": gateway_url, "pid": os.getpid(), "time_factor": factor,
                                     "context": self.cluster.context.name if self.cluster is not None else "local"})
            Path(self.home.pid_file).write_text(f"{os.getpid()}\n")
        except BaseException:
            await self._stop_gateway(keep_adopted=True)
            raise
        loop = asyncio.get_running_loop()
        if self.cluster is not None:  # the cluster's watches wake the loop: a Node's notice is acted on at once
            self.cluster.follow(lambda: loop.call_soon_threadsafe(self._wake.set))
        self._loop_task = loop.create_task(self._loop())

    def _persisting(self, handle):
        """A state kept in the cluster is written before a change the API accepted is answered."""
        if self.cluster is None:
            return handle

        async def persisted(req):
            response = await handle(req)
            if req.method not in ("GET", "HEAD"):
                await self._sync()
            return response
        return persisted

    async def _sync(self) -> None:
        if self.cluster is None:
            return
        from tidal.backends.kubernetes.state import StateError
        try:
            await asyncio.to_thread(self.store.sync)
        except StateError as exc:
            log.error("%s", exc)

    def _make_gateway(self, port: int, token: str):
        from tidal.gateway import Gateway
        if self.options.gateway_mode == GatewayMode.IN_PROCESS:
            return Gateway(self.options.host, port, on_queue=lambda _service: self._wake.set())
        from tidal.gateway.client import GatewayClient
        from tidal.gateway.control import load_routes
        from tidal.gateway.supervisor import GatewayFiles
        # The routes the gateway serves now (if it still runs) or served last: the reconciler starts from them.
        routes = load_routes(GatewayFiles.in_home(self.home.root).routes_file)
        return GatewayClient(self.options.host, port, token, services=routes)

    async def _start_gateway(self, port: int, token: str) -> None:
        """Start the gateway (in process), or adopt or start its process and watch it."""
        if self.options.gateway_mode == GatewayMode.IN_PROCESS:
            try:
                await self.gateway.start()
            except OSError as exc:
                raise FailedPrecondition(f"cannot listen on {self.options.host}:{port} for the gateway: "
                                         f"{exc.strerror or exc} (choose another with --gateway-port)") from None
            return
        from tidal.gateway.supervisor import GatewayFiles, GatewaySupervisor
        self.gateway_supervisor = GatewaySupervisor(GatewayFiles.in_home(self.home.root), self.options.host, port,
                                                    token, self.gateway, on_event=self.reconciler.event,
                                                    workers=self.options.gateway_workers,
                                                    engine=self.options.gateway_engine)
        await self.gateway_supervisor.start()

    async def _loop(self) -> None:
        clock = self.reconciler.clock
        while not self._stopping:
            try:
                if self.cluster is not None and (catalog := self.cluster.catalog()) is not None:
                    self.reconciler.catalog = catalog  # the cluster's Nodes changed: its zones may have
                await self.reconciler.tick()
            except Exception:  # a bad pass is logged and retried; it must not stop reconciling
                log.exception("reconcile pass failed")
            await self._sync()
            self._wake.clear()
            wait = clock.real(self.options.settings.tick_seconds)
            if self.reconciler.burst_tick_seconds is not None:
                # A service in burst mode decides every burst tick (2 s), sooner than the usual pass.
                wait = min(wait, clock.real(self.reconciler.burst_tick_seconds))
            if self.reconciler.settling():
                wait = min(wait, 1.0)  # a replica is starting or draining: notice the change within a second
            if self.reconciler.waiting:
                wait = min(wait, 0.1)  # requests wait at the gateway for a replica: route it the moment it is ready
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.05, wait))
            except asyncio.TimeoutError:
                pass

    async def serve(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    async def stop(self, stop_replicas: bool = True) -> None:
        """Stop serving. `tidal down` also stops the replicas (desired state is kept for the next `up`)."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except (asyncio.CancelledError, Exception):
                pass
        if self.api_server is not None:
            await self.api_server.stop(2.0)
        # The gateway first: it takes no new requests and finishes those in flight, then the replicas go.
        await self._stop_gateway()
        # On a cluster the pods are the cluster's to keep running: a control plane that stops (a rollout, a
        # restart) leaves them serving, and the next one adopts them from the state it left in the cluster.
        if stop_replicas and self.reconciler is not None and self.cluster is None:
            async with self.reconciler.lock:
                self.reconciler.shutdown()
        await self._sync()
        if self.cluster is not None:
            self.cluster.close()  # its watches, then the backend and its client
        elif self.reconciler is not None:
            self.reconciler.backend.close()
        if self.store is not None:
            self.store.close()
        for p in (self.home.address_file, self.home.pid_file):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        if self._lock_fd is not None:
            os.close(self._lock_fd)

    async def _stop_gateway(self, keep_adopted: bool = False) -> None:
        """Stop the gateway; `keep_adopted`: a start that failed leaves a gateway it adopted serving its routes."""
        if self.gateway_supervisor is not None:
            if keep_adopted and self.gateway_supervisor.adopted:
                await self.gateway_supervisor.release()
            else:
                await self.gateway_supervisor.stop()
        elif self.gateway is not None and hasattr(self.gateway, "stop"):
            await self.gateway.stop()


def _cluster(home: Home, catalog):
    """The cluster the current context names (TIDAL_CONTEXT or `tidal context use`); None for this machine."""
    from tidal.backends.kubernetes.contexts import ContextStore
    context = ContextStore(home.root, os.environ).current()
    if not context.is_kubernetes:
        return None
    from tidal.backends.kubernetes.wiring import connect
    return connect(context, catalog)


def _last_time(store: Store) -> float:
    ev = store.events(limit=1)
    return ev[-1].time if ev else 0.0


def _console_handler(cp: ControlPlane):
    """The web console, when its package is there: it reads through the provider it defines."""
    try:
        from tidal.console import mount  # type: ignore[attr-defined]
    except Exception:
        return None
    try:
        return mount(cp)
    except Exception:
        log.exception("the console could not be mounted; the API runs without it")
        return None


def _lock(pid_file: Path) -> int:
    """One control plane per TIDAL_HOME: an exclusive lock the kernel drops when the process dies (SIGKILL too)."""
    lock_path = pid_file.with_suffix(".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FailedPrecondition(f"a control plane is already running for {pid_file.parent} "
                                 f"(pid {read_pid(pid_file) or '?'}); `tidal down` stops it") from None
    return fd


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def is_running(home: Home) -> bool:
    lock_path = home.pid_file.with_suffix(".lock")
    if not lock_path.exists():
        return False
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def run_foreground(home: Home, options: DaemonOptions) -> int:
    from tidal.logs import setup_from_env
    setup_from_env(os.environ)  # TIDAL_LOG_FILE etc.: rotated file, repeats collapsed

    async def main() -> None:
        if options.leader_election is not None:
            await _run_as_leader(home, options)
            return
        cp = ControlPlane(home, options)
        await cp.start()
        print(f"tidal control plane: API {home.read_address()['api']}, gateway {home.read_address()['gateway']}",
              flush=True)
        try:
            await cp.serve()
        finally:
            await cp.stop()

    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
    return 0


# -- leader election: the control plane acts only while it holds the Lease ------------------------------------

async def _run_as_leader(home: Home, options: DaemonOptions) -> None:
    """Wait for the Lease, run the control plane while it is held, and stop acting the moment it is not.

    A leader that loses the Lease stops its API, gateway and reconcile loop and exits with an error (in a pod,
    the kubelet restarts it as a candidate again); one stopped by SIGTERM releases the Lease after it has
    stopped, so a successor starts at once. Neither stops the replicas: the next leader adopts them."""
    from tidal.backends.kubernetes.lease import elector_for_context
    elector = elector_for_context(options.leader_election)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        print(f"tidal control plane: candidate {elector.identity} for the Lease {elector.namespace}/{elector.name}",
              flush=True)
        if not await elector.acquire(stop):
            return
        # Renewals run from the moment the Lease is held, while the control plane starts too: a start slower than
        # the lease must not let a successor begin while this one is still adopting replicas.
        holding = asyncio.create_task(elector.hold(stop))
        cp = ControlPlane(home, options)
        starting = asyncio.create_task(cp.start())
        await asyncio.wait({holding, starting}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done() and starting.exception() is not None:
            holding.cancel()
            await asyncio.gather(holding, return_exceptions=True)
            await asyncio.to_thread(elector.release)
            raise starting.exception()
        if not starting.done():  # the Lease lost, or SIGTERM, before the start finished: stop starting
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        try:
            if not holding.done():
                print(f"tidal control plane: leading; API {home.read_address()['api']}, "
                      f"gateway {home.read_address()['gateway']}", flush=True)
            await holding
        finally:
            try:
                await cp.stop(stop_replicas=False)
            except Exception:  # a start cut short leaves parts that were never started
                log.exception("stopping the control plane")
            if stop.is_set():
                await asyncio.to_thread(elector.release)
        if not stop.is_set():
            raise FailedPrecondition(f"lost the Lease {elector.namespace}/{elector.name} "
                                     f"(now held by {elector.holder() or 'nobody'}): stopped acting")
    finally:
        elector.close()


def spawn_background(home: Home, argv: list[str], wait_seconds: float = 30.0) -> dict:
    """Start `tidal up --foreground ...` detached, its output in the log; wait until its API answers."""
    from tidal.control.client import ApiClient
    home.ensure()
    out = child_output(home.log_file)
    # The control plane logs to its own file, rotated by size; its stdout/stderr (a crash, an error at start) go
    # beside it.
    with open(out, "ab") as log_out:
        proc = subprocess.Popen([sys.executable, "-P", "-m", "tidal", "up", "--foreground", *argv],
                                stdin=subprocess.DEVNULL, stdout=log_out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True,
                                env=dict(os.environ, TIDAL_HOME=str(home.root), **child_log_env(home.log_file)))
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            why = last_line(out, home.log_file, prefix="tidal up: error: ") or f"see {home.log_file}"
            raise FailedPrecondition(f"the control plane exited at start: {why}")
        addr = home.read_address()
        if addr and addr.get("pid") == proc.pid:
            try:
                ApiClient.for_home(home).get("/healthz")
                return addr
            except Exception:
                pass
        time.sleep(0.1)
    raise FailedPrecondition(f"the control plane did not answer within {wait_seconds:.0f}s (log: {home.log_file})")


def stop_background(home: Home, timeout: float = 60.0) -> bool:
    pid = read_pid(home.pid_file)
    if pid is None or not is_running(home):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(home):
            return True
        time.sleep(0.1)
    raise FailedPrecondition(f"the control plane (pid {pid}) did not stop within {timeout:.0f}s")
