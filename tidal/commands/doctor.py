"""`tidal doctor`: what is installed and whether this machine can run Tidal, as checks with a status each.

Probes (metadata, nvidia-smi, sockets, the file system, the control plane's health endpoint) fill a Snapshot;
`diagnose` is a pure function of it, so every verdict is tested on made-up snapshots.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Mapping, Optional

from tidal.commands.common import add_output, emit, table
from tidal.commands.version import dist_version

PORTS = {8470: "the API's default, `tidal up --port`", 8501: "the gateway's default and TF Serving's REST port",
         8500: "TF Serving's gRPC port, `tidal model-server --port`"}
MIN_PYTHON = (3, 11)


class Status(str, Enum):
    OK = "ok"
    INFO = "info"  # nothing wrong; something optional is absent
    WARN = "warn"  # works, but not as well as it could
    FAIL = "fail"  # Tidal cannot run as installed


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ControlPlaneSeen:
    address: Optional[dict]  # what $TIDAL_HOME/address.json says, None when there is none
    reachable: bool = False
    detail: str = ""


@dataclass(frozen=True)
class Snapshot:
    """Everything the probes saw; `diagnose` decides from this alone."""
    tidal: str
    python: tuple[int, int, int]
    requires: tuple[str, ...]  # the distributions Tidal always needs
    extras: dict[str, tuple[str, ...]]
    dists: dict[str, Optional[str]]  # distribution -> installed version, None when absent
    nvidia_smi: Optional[str]  # `nvidia-smi -L` output; None when there is no nvidia-smi or it failed
    cuda_visible_devices: Optional[str]
    ort_providers: tuple[str, ...]
    ports_free: dict[int, bool]
    home: str
    home_writable: bool
    home_problem: str
    control_plane: ControlPlaneSeen


@dataclass(frozen=True)
class Probes:
    """The outside world, injected: tests pass fakes, `Probes.real()` the machine's."""
    dist_version: Callable[[str], Optional[str]]
    nvidia_smi: Callable[[], Optional[str]]
    ort_providers: Callable[[], tuple[str, ...]]
    port_free: Callable[[int], bool]
    writable: Callable[[Path], tuple[bool, str]]
    control_plane: Callable[[Path, Mapping[str, str]], ControlPlaneSeen]

    @classmethod
    def real(cls) -> "Probes":
        return cls(dist_version, _nvidia_smi, _ort_providers, _port_free, _writable, _control_plane)


# -- probes -----------------------------------------------------------------------------------------------------

def _nvidia_smi() -> Optional[str]:
    path = shutil.which("nvidia-smi")
    if not path:
        return None
    try:
        done = subprocess.run([path, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _ort_providers() -> tuple[str, ...]:
    try:
        import onnxruntime
    except ImportError:
        return ()
    return tuple(onnxruntime.get_available_providers())


def _port_free(port: int) -> bool:
    # SO_REUSEADDR as Tidal's servers bind, so a port in TIME_WAIT counts as free, as it is for them.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _writable(home: Path) -> tuple[bool, str]:
    """Whether Tidal can write its state under `home`, creating nothing that is not already there."""
    if home.exists():
        if not home.is_dir():
            return False, f"{home} is not a directory"
        try:
            with tempfile.NamedTemporaryFile(dir=home, prefix=".doctor-"):
                pass
        except OSError as exc:
            return False, f"cannot write in {home}: {exc.strerror or exc}"
        return True, ""
    parent = next((p for p in home.parents if p.exists()), None)
    if parent is None or not os.access(parent, os.W_OK | os.X_OK):
        return False, f"{home} does not exist and {parent} is not writable"
    return True, "does not exist yet; `tidal up` creates it"


def _control_plane(home: Path, env: Mapping[str, str]) -> ControlPlaneSeen:
    from tidal.control.client import ApiClient
    from tidal.control.home import Home
    from tidal.errors import TidalError

    address = Home(home).read_address()
    url = env.get("TIDAL_API") or (address or {}).get("api")
    if not url:
        return ControlPlaneSeen(None)
    try:
        api = ApiClient.for_home(Home(home), dict(env))
        api.timeout = 3.0
        api.get("/healthz")
    except TidalError as exc:  # Unavailable (nothing listening) or an answer that is an error (a refused token)
        return ControlPlaneSeen(address or {"api": url}, False, str(exc))
    return ControlPlaneSeen(address or {"api": url}, True, "")


# -- the snapshot and the verdicts ------------------------------------------------------------------------------

def observe(probes: Probes, home: Path, env: Mapping[str, str]) -> Snapshot:
    from tidal.about import about
    info = about()
    names = set(info.requires) | {d for ds in info.extras.values() for d in ds}
    names |= {"onnxruntime", "onnxruntime-gpu", "tensorflow", "tensorflow-serving-api"}
    return Snapshot(
        tidal=info.version, python=tuple(sys.version_info[:3]), requires=info.requires,
        extras=info.extras, dists={n: probes.dist_version(n) for n in sorted(names)},
        nvidia_smi=probes.nvidia_smi(), cuda_visible_devices=env.get("CUDA_VISIBLE_DEVICES"),
        ort_providers=probes.ort_providers(), ports_free={p: probes.port_free(p) for p in PORTS},
        home=str(home), **dict(zip(("home_writable", "home_problem"), probes.writable(home))),
        control_plane=probes.control_plane(home, env))


def gpus_seen(snap: Snapshot) -> list[str]:
    """The GPUs this process may use: nvidia-smi's list, narrowed by CUDA_VISIBLE_DEVICES when it is set."""
    listed = [line.strip() for line in (snap.nvidia_smi or "").splitlines() if line.strip().startswith("GPU ")]
    visible = snap.cuda_visible_devices
    if visible is None:
        return listed
    wanted = [v.strip() for v in visible.split(",") if v.strip()]
    if not wanted or wanted[0].startswith("-"):
        return []
    picked = []
    for w in wanted:
        if w.isdigit() and int(w) < len(listed):
            picked.append(listed[int(w)])
        else:
            picked.extend(g for g in listed if w in g)  # a UUID (GPU-...) or MIG id
            if not listed:
                picked.append(f"GPU {w} (from CUDA_VISIBLE_DEVICES)")
    return picked


def diagnose(snap: Snapshot) -> list[Check]:
    checks = [Check("tidal", Status.OK if snap.python >= MIN_PYTHON else Status.FAIL,
                    f"{snap.tidal} on Python {'.'.join(map(str, snap.python))}"
                    + ("" if snap.python >= MIN_PYTHON else f" (needs Python {'.'.join(map(str, MIN_PYTHON))}+)"),
                    {"version": snap.tidal, "python": ".".join(map(str, snap.python))})]
    missing = [d for d in snap.requires if not snap.dists.get(d)]
    checks.append(Check("dependencies", Status.FAIL if missing else Status.OK,
                        f"missing {', '.join(missing)}: reinstall Tidal with its dependencies" if missing
                        else f"all {len(snap.requires)} installed", {"missing": missing}))
    checks += _runtimes(snap)
    checks.append(_extras(snap))
    checks.append(_gpus(snap))
    checks += _ports(snap)
    checks.append(Check("TIDAL_HOME", Status.OK if snap.home_writable else Status.FAIL,
                        f"{snap.home} writable" + (f" ({snap.home_problem})" if snap.home_problem else "")
                        if snap.home_writable else snap.home_problem,
                        {"path": snap.home, "writable": snap.home_writable}))
    checks.append(_control(snap))
    return checks


def _runtimes(snap: Snapshot) -> list[Check]:
    ort = snap.dists.get("onnxruntime") or snap.dists.get("onnxruntime-gpu")
    tf, tfs = snap.dists.get("tensorflow"), snap.dists.get("tensorflow-serving-api")
    out = [Check("runtime: ONNX", Status.OK if ort else Status.FAIL,
                 f"onnxruntime {ort}" if ort else "onnxruntime is missing: the model server cannot load models",
                 {"onnxruntime": ort})]
    if tf and tfs:
        out.append(Check("runtime: TensorFlow", Status.OK, f"tensorflow {tf}, tensorflow-serving-api {tfs}",
                         {"tensorflow": tf, "tensorflow-serving-api": tfs}))
    elif tf:
        out.append(Check("runtime: TensorFlow", Status.WARN, f"tensorflow {tf} without tensorflow-serving-api: "
                         "SavedModels load but the gRPC API is off (pip install 'tidal[tensorflow]')",
                         {"tensorflow": tf, "tensorflow-serving-api": None}))
    else:
        out.append(Check("runtime: TensorFlow", Status.INFO, "not installed: ONNX models only "
                         "(pip install 'tidal[tensorflow]' for SavedModels and TF Serving's gRPC API)",
                         {"tensorflow": None, "tensorflow-serving-api": tfs}))
    return out


def _extras(snap: Snapshot) -> Check:
    state = {}
    for extra, dists in sorted(snap.extras.items()):
        absent = [d for d in dict.fromkeys(dists) if not snap.dists.get(d)]
        state[extra] = absent
    have = [e for e, absent in state.items() if not absent]
    lacking = [f"{e} (needs {', '.join(a)})" for e, a in state.items() if a]
    detail = f"installed: {', '.join(have) or 'none'}" + (f"; not installed: {'; '.join(lacking)}" if lacking else "")
    return Check("extras", Status.INFO if lacking else Status.OK, detail,
                 {"installed": have, "missing": {e: a for e, a in state.items() if a}})


def _gpus(snap: Snapshot) -> Check:
    seen = gpus_seen(snap)
    cuda = [p for p in snap.ort_providers if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
    data = {"gpus": seen, "cuda_visible_devices": snap.cuda_visible_devices,
            "nvidia_smi": snap.nvidia_smi is not None, "onnxruntime_providers": list(snap.ort_providers)}
    if not seen:
        why = ["nvidia-smi found none" if snap.nvidia_smi is not None else "no nvidia-smi"]
        if snap.cuda_visible_devices is not None:
            why.append(f"CUDA_VISIBLE_DEVICES={snap.cuda_visible_devices!r}")
        return Check("GPUs", Status.INFO, f"none seen ({', '.join(why)}); replicas run on the CPU", data)
    detail = f"{len(seen)} seen: " + "; ".join(seen)
    if not cuda:
        return Check("GPUs", Status.WARN, detail + "; onnxruntime has no CUDA provider (it is the CPU build: "
                     "pip install onnxruntime-gpu to use them)", data)
    return Check("GPUs", Status.OK, detail + f"; onnxruntime: {', '.join(cuda)}", data)


def _ports(snap: Snapshot) -> list[Check]:
    ours = set()
    if snap.control_plane.reachable:
        for url in (snap.control_plane.address or {}).values():
            if isinstance(url, str) and url.rsplit(":", 1)[-1].isdigit():
                ours.add(int(url.rsplit(":", 1)[-1]))
    out = []
    for port, what in PORTS.items():
        free = snap.ports_free.get(port, True)
        if free:
            out.append(Check(f"port {port}", Status.OK, f"free: {what}", {"free": True}))
        elif port in ours:
            out.append(Check(f"port {port}", Status.OK, "in use by this TIDAL_HOME's control plane",
                             {"free": False, "ours": True}))
        else:
            out.append(Check(f"port {port}", Status.WARN, f"in use by another process; {what}: pass another port, "
                             "or 0 for any free one", {"free": False, "ours": False}))
    return out


def _control(snap: Snapshot) -> Check:
    cp = snap.control_plane
    if cp.address is None:
        return Check("control plane", Status.INFO, "not running (start it with `tidal up`)", {"running": False})
    api = cp.address.get("api", "?")
    if cp.reachable:
        return Check("control plane", Status.OK, f"reachable at {api}, gateway {cp.address.get('gateway', '?')}",
                     {"running": True, "api": api, "gateway": cp.address.get("gateway")})
    return Check("control plane", Status.WARN, f"not reachable at {api}: {cp.detail}",
                 {"running": False, "api": api})


# -- the command ------------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("example:\n  tidal doctor\n  tidal doctor -o json\n"
                     "exit status: 1 when a check fails (Tidal cannot run as installed), else 0")
    add_output(parser, ("table", "json"))


def run(args: argparse.Namespace, probes: Probes | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    home = Path(env.get("TIDAL_HOME") or Path.home() / ".tidal").expanduser()
    checks = diagnose(observe(probes or Probes.real(), home, env))
    ok = all(c.status is not Status.FAIL for c in checks)
    doc = {"ok": ok, "checks": [{"name": c.name, "status": c.status.value, "detail": c.detail, "data": c.data}
                                for c in checks]}
    if not emit(doc, args.output):
        table(["CHECK", "STATUS", "DETAIL"], [[c.name, c.status.value, c.detail] for c in checks])
    return 0 if ok else 1
