"""A real Kubernetes control plane on 127.0.0.1 (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)
with kwok's simulated kubelets on fake Nodes labelled like a spot and on-demand node pool across zones."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "kube-binaries.sh"
KWOK_STAGES = Path(__file__).with_name("kwok-stages.yaml")
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "helm")
SERVICE_CIDR = "10.96.0.0/16"
# Well-known node labels (Kubernetes' and Karpenter's), the ones a node pool's nodes carry on a real cluster.
ZONE = "topology.kubernetes.io/zone"
INSTANCE_TYPE = "node.kubernetes.io/instance-type"
CAPACITY_TYPE = "karpenter.sh/capacity-type"
# kwok manages only the Nodes that carry this label, so a Node created by a test without it stays unmanaged.
KWOK_LABEL = ("type", "kwok")


class ClusterError(RuntimeError):
    """The control plane could not be started; the message carries the tails of the components' logs."""


@dataclass(frozen=True)
class FakeNode:
    """A Node that kwok reports Ready and whose bound Pods it runs."""

    name: str
    zone: str
    instance_type: str
    capacity_type: str  # Karpenter's values: "spot" or "on-demand"
    cpu: str = "4"
    memory: str = "16Gi"

    def manifest(self) -> dict:
        resources = {"cpu": self.cpu, "memory": self.memory, "pods": "110"}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    KWOK_LABEL[0]: KWOK_LABEL[1],
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    ZONE: self.zone,
                    INSTANCE_TYPE: self.instance_type,
                    CAPACITY_TYPE: self.capacity_type,
                },
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            # Nodes keep their status on create, so the scheduler sees this capacity from the start.
            "status": {"allocatable": resources, "capacity": resources},
        }


DEFAULT_NODES = (
    FakeNode("spot-a-1", "zone-a", "ecs.g7.xlarge", "spot"),
    FakeNode("spot-b-1", "zone-b", "ecs.g7.xlarge", "spot"),
    FakeNode("ondemand-a-1", "zone-a", "ecs.g7.xlarge", "on-demand"),
    FakeNode("ondemand-b-1", "zone-b", "ecs.g7.xlarge", "on-demand"),
)


def binaries_present(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) for name in BINARIES)


def default_bin_dir() -> Path:
    """Where scripts/kube-binaries.sh keeps the binaries (TIDAL_KUBE_BIN, else the user's cache by release)."""
    if os.environ.get("TIDAL_KUBE_BIN"):
        return Path(os.environ["TIDAL_KUBE_BIN"])
    version = next((line.split()[1] for line in (REPO_ROOT / "tools" / "kube" / "go.mod").read_text().splitlines()
                    if line.strip().startswith("k8s.io/kubernetes v")), "unknown")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tidal" / "kube" / version / "bin"


def build_binaries() -> Path:
    """Run scripts/kube-binaries.sh (builds only what is missing); its progress goes to our stderr."""
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"scripts/kube-binaries.sh failed with exit code {proc.returncode} (its output is above)")
    return Path(proc.stdout.strip().splitlines()[-1])


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out on 127.0.0.1, all held until every one is chosen so none repeats."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text[-lines:])


@dataclass
class ControlPlane:
    """Starts and stops the components; every process logs into `work_dir/logs/<component>.log`."""

    bin_dir: Path
    work_dir: Path
    nodes: tuple[FakeNode, ...] = DEFAULT_NODES
    server: str = ""
    kubeconfig: Path = field(init=False)
    ca_file: Path = field(init=False)
    _procs: dict[str, tuple[subprocess.Popen, IO[bytes]]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.logs = self.work_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = self.work_dir / "admin.kubeconfig"
        self.pki = self.work_dir / "pki"
        self.ca_file = self.pki / "apiserver.crt"

    # -- processes ------------------------------------------------------------------------------------------

    def _start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [str(self.bin_dir / args[0]), *args[1:]],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=self.work_dir, env={**os.environ, **(env or {})}, start_new_session=True,
        )
        self._procs[name] = (proc, log)

    def check_alive(self) -> None:
        for name, (proc, _) in self._procs.items():
            if proc.poll() is not None:
                raise ClusterError(f"{name} exited with code {proc.returncode}\n{self.describe_logs()}")

    def describe_logs(self, lines: int = 40) -> str:
        parts = [f"--- {p.name} (last {lines} lines) ---\n{log_tail(p, lines)}" for p in sorted(self.logs.glob("*.log"))]
        return f"logs in {self.logs}\n" + "\n".join(parts)

    def wait(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        """Poll `ready` (a process's own readiness endpoint; there is no event to wait on) while checking that
        no component died."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.describe_logs()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM in reverse start order (kwok and the controllers before the API server, etcd last)."""
        for name in reversed(list(self._procs)):
            proc, log = self._procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()
        self._procs.clear()

    # -- start ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise

    def _start_all(self) -> None:
        etcd_port, peer_port, api_port, kwok_port = free_ports(4)
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._start("etcd", [
            "etcd", "--name=tidal-test", f"--data-dir={self.work_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=tidal-test={peer_url}",
            # a throwaway store: durability costs seconds of fsync on a shared disk and buys nothing here
            "--unsafe-no-fsync", "--log-level=warn",
        ])

        tokens = {user: secrets.token_urlsafe(24) for user in ("admin", "controller-manager", "scheduler", "kwok")}
        token_file = self.work_dir / "tokens.csv"
        # token,user,uid,"group1,group2": the scheduler is its own user with the roles RBAC bootstraps for it;
        # the others are cluster admins (the controller manager runs without per-controller service accounts).
        token_file.write_text(
            f'{tokens["admin"]},admin,admin,"system:masters"\n'
            f'{tokens["controller-manager"]},system:kube-controller-manager,kcm,"system:masters"\n'
            f'{tokens["scheduler"]},system:kube-scheduler,scheduler\n'
            f'{tokens["kwok"]},kwok,kwok,"system:masters"\n'
        )
        token_file.chmod(0o600)
        sa_key, sa_pub = self._service_account_keys()

        self.wait("etcd", lambda: _http_ok(f"{etcd_url}/health"), timeout=60)
        self.server = f"https://127.0.0.1:{api_port}"
        self._start("kube-apiserver", [
            "kube-apiserver", f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            f"--cert-dir={self.pki}",  # a self-signed serving certificate, written there at start
            f"--token-auth-file={token_file}", "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_pub}", f"--service-account-signing-key-file={sa_key}",
            # the `kubernetes` Service cannot point at a loopback address; nothing in the tests uses it
            "--endpoint-reconciler-type=none", "--profiling=false", "--v=1",
        ])
        self.wait("the API server's certificate", self.ca_file.exists, timeout=60)
        self.write_kubeconfig(self.kubeconfig, "admin", tokens["admin"])
        context = ssl.create_default_context(cafile=str(self.ca_file))
        self.wait("kube-apiserver /readyz",
                  lambda: _http_ok(f"{self.server}/readyz", tokens["admin"], context), timeout=120)

        configs = {name: self.work_dir / f"{name}.kubeconfig" for name in ("controller-manager", "scheduler", "kwok")}
        for name, path in configs.items():
            self.write_kubeconfig(path, name, tokens[name])
        self._start("kube-controller-manager", [
            "kube-controller-manager", f"--kubeconfig={configs['controller-manager']}",
            "--controllers=*", "--use-service-account-credentials=false", "--leader-elect=false",
            "--secure-port=0",  # nothing probes it; the tests watch what it does instead
            f"--service-account-private-key-file={sa_key}", f"--root-ca-file={self.ca_file}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--v=1",
        ])
        self._start("kube-scheduler", [
            "kube-scheduler", f"--kubeconfig={configs['scheduler']}", "--leader-elect=false",
            "--secure-port=0", "--v=1",
        ])
        self._start("kwok", [
            "kwok", f"--kubeconfig={configs['kwok']}", f"--config={KWOK_STAGES}",
            "--manage-all-nodes=false", f"--manage-nodes-with-label-selector={KWOK_LABEL[0]}={KWOK_LABEL[1]}",
            "--cidr=10.244.0.0/16", "--node-ip=10.0.0.1", "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{kwok_port}",
        ], env={"KWOK_WORKDIR": str(self.work_dir / "kwok")})  # not the user's ~/.kwok

    def _service_account_keys(self) -> tuple[Path, Path]:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_path, pub_path = self.work_dir / "sa.key", self.work_dir / "sa.pub"
        key_path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        key_path.chmod(0o600)
        pub_path.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        return key_path, pub_path

    def write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        ca = base64.b64encode(self.ca_file.read_bytes()).decode()
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "tidal-test",
            "clusters": [{"name": "tidal-test", "cluster": {"server": self.server, "certificate-authority-data": ca}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "tidal-test", "context": {"cluster": "tidal-test", "user": user}}],
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)

    # -- nodes ----------------------------------------------------------------------------------------------

    def add_nodes(self, core) -> None:
        """Create the fake Nodes and wait until kwok reports each Ready and the scheduler may use it."""
        for node in self.nodes:
            core.create_node(node.manifest())
        names = {node.name for node in self.nodes}

        def all_ready() -> bool:
            ready = set()
            for item in core.list_node(label_selector=f"{KWOK_LABEL[0]}={KWOK_LABEL[1]}").items:
                conditions = {c.type: c.status for c in item.status.conditions or ()}
                taints = [t.key for t in item.spec.taints or () if t.key.startswith("node.kubernetes.io/")]
                if conditions.get("Ready") == "True" and not taints:
                    ready.add(item.metadata.name)
            return ready >= names

        self.wait("kwok to report the fake Nodes Ready", all_ready, timeout=60)


def _http_ok(url: str, token: str | None = None, context: ssl.SSLContext | None = None) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            body = response.read()
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False
    if url.endswith("/health"):  # etcd answers 200 with {"health":"false"} while it has no leader
        return json.loads(body).get("health") == "true"
    return response.status == 200


def go_available() -> bool:
    return shutil.which("go") is not None
