"""The local backend: nodes are slices of this machine, replicas are real `tidal model-server` processes on free ports."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import orjson

from tidal.backends.base import (Adoption, CapacityUnavailable, NodeLaunch, ReplicaLaunch, ReplicaPhase, ReplicaRef,
                                 ReplicaStatus, StartedReplica)
from tidal.backends.warmpool import WarmPool
from tidal.backends.warmpool_decide import WarmPoolSettings, model_flavour, unfit
from tidal.http.client import ClientError, HttpClient
from tidal.logs import child_log_env, child_output, last_line

log = logging.getLogger(__name__)

REPLICA_ENV = "TIDAL_REPLICA_ID"
HOME_ENV = "TIDAL_HOME"


# Replica ports are drawn below the kernel's ephemeral range: the port is free when drawn and bound by the
# replica a second later, and in between any process's outgoing connection or bind to port 0 may take a port
# of the ephemeral range (then the replica cannot bind and exits). Below it, only an explicit bind can.
_PORTS_FROM = 20000
_draw = random.Random()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_port(host: str = "127.0.0.1", tries: int = 64) -> int:
    """A port free on `host` now, below the ephemeral range where the machine has room there."""
    low = _ephemeral_low()
    for _ in range(tries if low > _PORTS_FROM + 1024 else 0):
        port = _draw.randrange(_PORTS_FROM, low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat): with the pid, a unique id."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    rest = stat[stat.rfind(")") + 2:].split()
    if rest[0] == "Z":  # a zombie is not running
        return None
    return int(rest[19])


def proc_environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def listening_inodes(port: int) -> set[int]:
    """Socket inodes listening on TCP `port` at any address (/proc/net/tcp and tcp6)."""
    out: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        needle = f":{port:04X} "
        for line in lines:
            if needle not in line:  # most lines are other ports' connections: skip them unsplit
                continue
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 10 the inode.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                out.add(int(fields[9]))
    return out


def owns_listener(pid: int, port: int) -> bool:
    """Whether process `pid` holds a socket listening on TCP `port`."""
    inodes = listening_inodes(port)
    if not inodes:
        return False
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            return True
    return False


def detect_gpus(env: dict[str, str] | None = None) -> int:
    """Physical GPUs on this machine (NVIDIA's /proc entries); 0 where there are none."""
    env = os.environ if env is None else env
    if env.get("TIDAL_GPUS"):
        return int(env["TIDAL_GPUS"])
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


class SpotTraceReplay:
    """A spot-availability trace (the simulator's format) replayed against one pool's zones from `start`."""

    def __init__(self, directory: str, zones: list[str], start: float) -> None:
        from tidal.sim.traces import load_spot_traces  # numpy, only when a trace is used
        self.trace = load_spot_traces(directory)
        # The pool's zones take the trace's files in order (both sorted); extra zones have no limit.
        self.by_zone = dict(zip(sorted(zones), self.trace.data))
        self.start = start

    def capacity(self, zone: str, now: float) -> int | None:
        data = self.by_zone.get(zone)
        if data is None:
            return None
        i = int(max(0.0, now - self.start) // self.trace.gap_seconds) % len(data)
        return int(data[i])


class LocalBackend:
    """Build with the installation's home; nothing runs until a node or replica is asked for (with a warm
    pool, its processes start at `adopt()`, the control plane's start)."""

    def __init__(self, home_root: Path, *, python: str | None = None, host: str = "127.0.0.1",
                 gpus: int | None = None, ready_timeout: float = 1.0,
                 warm_pool: WarmPoolSettings | None = None) -> None:
        self.home_root = Path(home_root)
        self.python = python or sys.executable
        self.host = host
        self.gpus = detect_gpus() if gpus is None else gpus
        self.ready_timeout = ready_timeout
        self.nodes: dict[str, NodeLaunch] = {}
        self.traces: dict[str, SpotTraceReplay] = {}
        self._children: dict[int, subprocess.Popen] = {}
        self._child_replica: dict[int, str] = {}  # pid -> the replica it was started (or taken) for
        self._client = HttpClient(connect_timeout=0.5, max_idle_per_host=2)
        self._gpu_slots: dict[str, list[int]] = {}
        self._next_gpu = 0
        self._lock = threading.Lock()
        self.provisioner = self  # nodes are slices of this machine: it launches them itself
        # Model servers started ahead (`tidal.backends.warmpool`); off unless settings are given.
        self.warm = (WarmPool(self.home_root, self.python, warm_pool, cuda="" if self.gpus else None)
                     if warm_pool is not None and warm_pool.enabled else None)

    # -- nodes: bookkeeping, a zone's spot capacity may refuse a launch
    def set_trace(self, pool: str, directory: str, zones: list[str], start: float) -> None:
        self.traces[pool] = SpotTraceReplay(directory, zones, start)

    def spot_capacity(self, pool: str, zone: str, now: float) -> int | None:
        replay = self.traces.get(pool)
        return None if replay is None else replay.capacity(zone, now)

    def launch_node(self, node: NodeLaunch, spot_held_in_zone: int, now: float) -> None:
        if node.billing == "spot":
            cap = self.spot_capacity(node.pool, node.zone, now)
            if cap is not None and spot_held_in_zone >= cap:
                raise CapacityUnavailable(f"no spot capacity for {node.instance_type} in {node.zone} "
                                          f"({spot_held_in_zone} held, the zone holds {cap})")
        self.adopt_node(node)

    def adopt_node(self, node: NodeLaunch) -> None:
        self.nodes[node.name] = node
        if node.gpus and self.gpus:
            # A node's GPUs map onto the machine's, round robin: pinning, not exclusivity, on a small box.
            slots = []
            for _ in range(node.gpus):
                slots.append(self._next_gpu % self.gpus)
                self._next_gpu += 1
            self._gpu_slots[node.name] = slots

    def terminate_node(self, name: str) -> None:
        self.nodes.pop(name, None)
        self._gpu_slots.pop(name, None)

    # -- replicas: real processes; a replica's ref is {pid, proc_start, port, grpc_port}
    def log_path(self, replica: str) -> str:
        """The replica's log file (the API's `tidal logs` reads it; `logs()` is the engine-neutral way)."""
        return str(self.home_root / "logs" / "replicas" / f"{replica}.log")

    def logs(self, replica: str, tail: int = 100) -> str:
        path = Path(self.log_path(replica))
        lines = _tail(path, max(1, tail) * 400).splitlines()
        # What it printed outside logging (a crash's traceback) comes last.
        lines += _tail(child_output(path), max(1, tail) * 400).splitlines()
        return "\n".join(lines[-tail:]) if tail > 0 else ""

    def start_replica(self, launch: ReplicaLaunch) -> StartedReplica:
        port, grpc_port = free_port(self.host), free_port(self.host)
        # -P (safe path): the model server imports the installed tidal, never a tidal/ folder in the cwd.
        argv = [self.python, "-P", "-m", "tidal", "model-server", "--port", str(grpc_port),
                "--rest_api_port", str(port), "--rest_api_host", self.host]
        if launch.model_config_file:
            argv += ["--model_config_file", launch.model_config_file]
        else:
            config = self._write_model_config(launch)
            argv += ["--model_config_file", str(config)]
        env = dict(os.environ)
        env.update(launch.env)
        env[REPLICA_ENV] = launch.replica
        env[HOME_ENV] = str(self.home_root)
        env.pop("CUDA_VISIBLE_DEVICES", None)
        slots = self._gpu_slots.get(launch.node)
        if launch.gpus and slots:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(s) for s in slots[:launch.gpus])
        elif self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU replica on a GPU machine keeps off the GPUs
        path = Path(self.log_path(launch.replica))
        path.parent.mkdir(parents=True, exist_ok=True)
        # The model server logs to its own file, rotated by size; what it prints outside logging goes beside it.
        env.update(child_log_env(path))
        proc = self._from_pool(launch, argv, env, path)
        if proc is None:
            with open(child_output(path), "ab") as out:
                # A session of its own: the replica outlives a control plane killed with SIGKILL and is adopted.
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True, close_fds=True)
        with self._lock:
            self._children[proc.pid] = proc
            self._child_replica[proc.pid] = launch.replica
        start = proc_start_time(proc.pid) or 0
        ref = {"pid": proc.pid, "proc_start": start, "port": port, "grpc_port": grpc_port, "model": launch.model_name}
        if proc.args[3:4] == ["tidal.server.warm"]:
            ref["warm"] = True  # for the record: it is identified as any replica is
        return StartedReplica(ref=ref, endpoint=f"{self.host}:{port}")

    def _from_pool(self, launch: ReplicaLaunch, argv: list[str], env: dict[str, str],
                   path: Path) -> subprocess.Popen | None:
        """The replica as a warm pool process that took it, or None where it must start cold."""
        if self.warm is None:
            return None
        added = {k: v for k, v in env.items() if os.environ.get(k) != v}
        cuda = env.get("CUDA_VISIBLE_DEVICES")  # as pinned above, whatever launch.env said
        settings = {k: v for k, v in launch.env.items() if k != "CUDA_VISIBLE_DEVICES"}
        why = unfit(launch.replica, {**settings, **({"CUDA_VISIBLE_DEVICES": cuda} if cuda is not None else {})},
                    self.warm.cuda)
        if why is not None:
            log.info("replica %s starts cold: %s", launch.replica, why)
            return None
        self.warm.start()
        flavour = model_flavour(launch.model_base_path) if launch.model_base_path else None
        return self.warm.take(flavour, launch.replica, argv[4:], added, child_output(path))

    def warm_pool_status(self) -> dict:
        """The warm pool's processes and what they cost in memory ({"enabled": False} when it is off)."""
        return self.warm.status() if self.warm is not None else {"enabled": False}

    def _write_model_config(self, launch: ReplicaLaunch) -> Path:
        """TF Serving's model config (text format): the only way its flags carry a version policy."""
        policy = launch.version_policy or "latest"
        kind, _, arg = policy.partition(":")
        if kind == "specific":
            body = "specific { " + " ".join(f"versions: {v}" for v in arg.split(",") if v) + " }"
        elif kind == "all":
            body = "all {}"
        else:
            body = f"latest {{ num_versions: {int(arg or 1)} }}"
        text = ("model_config_list {\n  config {\n"
                f"    name: {_quote(launch.model_name)}\n"
                f"    base_path: {_quote(launch.model_base_path)}\n"
                f"    model_platform: \"tensorflow\"\n"
                f"    model_version_policy {{ {body} }}\n"
                "  }\n}\n")
        path = self.home_root / "run" / f"{launch.replica}.models.config"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def stop_replica(self, replica: str, ref: ReplicaRef | None, grace_seconds: float) -> None:
        if not ref or not self._alive(replica, ref):
            self._reap(ref.get("pid") if ref else None)
            return
        try:
            os.kill(ref["pid"], signal.SIGTERM)
        except ProcessLookupError:
            return
        # The model server drains in-flight requests on SIGTERM; force it only if it hangs.
        timer = threading.Timer(grace_seconds, self._force, args=(replica, ref))
        timer.daemon = True
        timer.start()

    def _force(self, replica: str, ref: ReplicaRef) -> None:
        if self._alive(replica, ref):
            log.warning("replica %s did not exit within its grace period: killing it", replica)
            self._kill(ref["pid"])
        self._reap(ref["pid"])

    def _reap(self, pid: int | None) -> None:
        if pid is None:
            return
        with self._lock:
            proc = self._children.get(pid)
        if proc is not None and proc.poll() is not None:
            with self._lock:
                self._children.pop(pid, None)
                self._child_replica.pop(pid, None)

    def _kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._reap(pid)

    def _alive(self, replica: str, ref: ReplicaRef) -> bool:
        """The process runs and is really this replica (pid reuse is not enough: its start time and marker too)."""
        pid = ref.get("pid")
        if pid is None:
            return False
        with self._lock:
            proc = self._children.get(pid)
        if proc is not None:
            if proc.poll() is not None:
                self._reap(pid)
                return False
            # Our own child, not reaped: its pid is no one else's. (Its environ file is not a proof here: just
            # after exec, before the kernel has set the new program's environment up, it reads empty.)
            return self._child_replica.get(pid) == replica and \
                (not ref.get("proc_start") or proc_start_time(pid) == ref["proc_start"])
        start = proc_start_time(pid)
        if start is None or (ref.get("proc_start") and start != ref["proc_start"]):
            return False
        return proc_environ(pid).get(REPLICA_ENV) == replica

    async def _ready(self, ref: ReplicaRef) -> bool:
        try:
            resp = await self._client.request("GET", self.host, ref["port"], "/v2/health/ready",
                                              timeout=self.ready_timeout)
        except (ClientError, OSError):
            return False
        # The port was free when it was picked, not when the replica binds it: another process may have
        # taken it meanwhile (the replica then fails to bind and exits). Only the replica's own answer counts,
        # or the gateway would route to whatever else listens there.
        if resp.status != 200:
            return False
        # In a thread: reading the kernel's socket table takes tens of milliseconds on a busy machine,
        # and this loop also runs the gateway.
        return await asyncio.to_thread(owns_listener, ref["pid"], ref["port"])

    async def _runtime(self, ref: ReplicaRef) -> str:
        """The engine serving the replica's model, from its V2 model metadata ("onnxruntime_onnx" -> onnxruntime);
        "" when it has no single model (a model config file) or does not say."""
        if not ref.get("model"):
            return ""
        try:
            resp = await self._client.request("GET", self.host, ref["port"], f"/v2/models/{ref['model']}",
                                              timeout=self.ready_timeout)
            platform = orjson.loads(resp.body).get("platform", "") if resp.status == 200 else ""
        except (ClientError, OSError, ValueError, AttributeError):
            return ""
        return platform.split("_")[0] if isinstance(platform, str) else ""

    async def observe_replicas(self, refs: dict[str, ReplicaRef],
                               known_ready: frozenset[str] = frozenset()) -> dict[str, ReplicaStatus]:
        out: dict[str, ReplicaStatus] = {}
        probes = []
        for rid, ref in refs.items():
            if not self._alive(rid, ref):
                out[rid] = ReplicaStatus(ReplicaPhase.EXITED, self._exit_reason(rid))
            elif rid in known_ready:
                out[rid] = ReplicaStatus(ReplicaPhase.READY)
            else:
                probes.append((rid, ref))
        results = await asyncio.gather(*(self._ready(ref) for _, ref in probes))
        for (rid, ref), ok in zip(probes, results):
            if ok:
                out[rid] = ReplicaStatus(ReplicaPhase.READY, runtime=await self._runtime(ref))
                continue
            # The model server keeps running when its model cannot load (it polls the base path): its log says why.
            failure = await asyncio.to_thread(self._load_failure, rid)
            out[rid] = ReplicaStatus(ReplicaPhase.FAILED, failure) if failure else ReplicaStatus(ReplicaPhase.STARTING)
        return out

    def _load_failure(self, replica: str) -> str | None:
        found = _LOAD_FAILURE.findall(_tail(Path(self.log_path(replica)), 16384))
        return found[-1].strip() if found else None

    def _exit_reason(self, replica: str) -> str:
        path = Path(self.log_path(replica))
        line = last_line(child_output(path), path)
        return f"process exited ({line[:200]})" if line else "process exited"

    def adopt(self, refs: dict[str, ReplicaRef]) -> Adoption:
        if self.warm is not None:
            self.warm.start()  # ahead of the first replica (a pool process carries no replica's marker)
        running = frozenset(rid for rid, ref in refs.items() if ref and self._alive(rid, ref))
        known = {rid: refs[rid]["pid"] for rid in running}
        removed = []
        for rid, pid in self._strays(known):
            # Started just before a crash, before its ref was recorded: the store does not want it.
            self._kill(pid)
            removed.append((rid, f"stray process {pid} the store does not know: killed"))
        return Adoption(running=running, removed=tuple(removed))

    def _strays(self, known: dict[str, int]) -> list[tuple[str, int]]:
        """Processes carrying this home's marker that are not the process the store records for their replica."""
        me = str(self.home_root)
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            env = proc_environ(pid)
            rid = env.get(REPLICA_ENV)
            if rid and env.get(HOME_ENV) == me and known.get(rid) != pid and proc_start_time(pid) is not None:
                out.append((rid, pid))
        return out

    def close(self) -> None:
        if self.warm is not None:
            self.warm.close()
        self._client.close()


# The model manager's line for a base path it cannot use (tidal.models.repository's messages); a path that cannot
# be *listed* (a store down) is not here: the server keeps polling it and may become ready.
_LOAD_FAILURE = re.compile(r"(model \S+: model base path .*?(?:does not exist|is not a directory|"
                           r"is a file, not a directory|no filesystem for .*))$", re.MULTILINE)


def _tail(path: Path, nbytes: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - nbytes))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
