"""The control plane's state in the cluster: the store's database kept in a ConfigMap of Tidal's, not a local file.

Under a Kubernetes context the store is the same SQLite schema and code, in memory; its content is written to
the ConfigMap `tidal-state` of the context's namespace (gzipped, as binaryData) after every reconcile pass and
every change the API accepts, and read back when a control plane starts, so a restarted one (here or in the
cluster) picks up where the last left off. Each write names the resourceVersion it read: a second control plane
writing meanwhile is refused (409) and said in one line, never silently overwritten. Nothing secret is in the
store (volume credentials stay in Tidal's secret store; replica env goes to a Kubernetes Secret). The event log
and the finished rows (stopped replicas, released nodes and so the cost history) keep their newest entries only.
"""

from __future__ import annotations

import base64
import gzip
import logging
import threading
from typing import Any

from tidal.backends.kubernetes.client import TIMEOUT_S, describe_failure
from tidal.control.store import SCHEMA, NodeRow, Store
from tidal.errors import TidalError
from tidal.states import NodeState, ReplicaState

log = logging.getLogger(__name__)

CONFIG_MAP = "tidal-state"
KEY = "state.sqlite.gz"
LIMIT_BYTES = 900 * 1024  # a ConfigMap holds at most 1 MiB


class StateError(TidalError):
    """Tidal's state in the cluster could not be read or written: one line."""


class ClusterStore(Store):
    """A Store whose database lives in a ConfigMap; `sync()` writes it when something changed."""

    MAX_EVENTS = 2_000  # the event log is bounded tighter than on disk: it travels in the ConfigMap
    MAX_FINISHED = 1_000  # stopped or failed replicas, terminated nodes (cost history): the newest are kept

    def __init__(self, api: Any, namespace: str) -> None:
        from kubernetes import client
        super().__init__(":memory:")
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self._dirty = False
        self._version: str | None = None
        self._sync_lock = threading.Lock()
        data = self._read()
        if data is not None:
            with self._lock:
                self._db.deserialize(data)
                self._db.executescript(SCHEMA)
                self._migrate()

    # -- every write marks the state changed
    def _x(self, sql: str, args: tuple = ()) -> int:
        with self._lock:
            self._dirty = True
            return super()._x(sql, args)

    def add_event(self, time: float, kind: str, obj: str, message: str) -> None:
        with self._lock:
            self._dirty = True
            super().add_event(time, kind, obj, message)
            # MAX_EVENTS here is far below the every-thousandth trim's reach: keep the newest only.
            self._db.execute("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?", (self.MAX_EVENTS,))

    def add_node(self, node: NodeRow) -> None:
        """A cluster Node claimed again after it was released: the earlier claim's row keeps its history under
        another name (its cost stays counted), the new claim takes the Node's name."""
        with self._lock, self.transaction():
            rows = self._q("SELECT state, terminated_at FROM nodes WHERE name=?", (node.name,))
            if rows and rows[0]["state"] == NodeState.TERMINATED:
                self._x("UPDATE nodes SET name=? WHERE name=?",
                        (f"{node.name}@{rows[0]['terminated_at'] or 0:.0f}", node.name))
            super().add_node(node)

    def _trim(self) -> None:
        """Finished rows beyond the newest MAX_FINISHED go, so the state stays far below a ConfigMap's limit."""
        self._db.execute("DELETE FROM replicas WHERE state IN (?, ?) AND id NOT IN (SELECT id FROM replicas WHERE "
                         "state IN (?, ?) ORDER BY stopped_at DESC LIMIT ?)",
                         (ReplicaState.STOPPED, ReplicaState.FAILED, ReplicaState.STOPPED, ReplicaState.FAILED,
                          self.MAX_FINISHED))
        self._db.execute("DELETE FROM nodes WHERE state = ? AND name NOT IN (SELECT name FROM nodes WHERE state = ? "
                         "ORDER BY terminated_at DESC LIMIT ?)",
                         (NodeState.TERMINATED, NodeState.TERMINATED, self.MAX_FINISHED))

    # -- the ConfigMap
    def _read(self) -> bytes | None:
        try:
            cm = self.core.read_namespaced_config_map(CONFIG_MAP, self.namespace, _request_timeout=TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - one line, whatever the client raised
            if getattr(exc, "status", None) == 404:
                return None
            raise StateError(describe_failure(exc, f"reading Tidal's state (ConfigMap {CONFIG_MAP})")) from None
        self._version = cm.metadata.resource_version
        raw = (cm.binary_data or {}).get(KEY)
        if not raw:
            return None
        try:
            return gzip.decompress(base64.b64decode(raw))
        except (OSError, ValueError) as exc:
            raise StateError(f"ConfigMap {self.namespace}/{CONFIG_MAP} does not hold Tidal's state ({exc}): "
                             f"remove it to start afresh") from None

    def sync(self) -> bool:
        """Write the state to the ConfigMap if it changed; returns whether it wrote."""
        with self._sync_lock:
            with self._lock:
                if not self._dirty:
                    return False
                self._trim()
                data = gzip.compress(self._db.serialize(), 6)
                self._dirty = False
            if len(data) > LIMIT_BYTES:
                log.warning("Tidal's state is %d KiB, near a ConfigMap's 1 MiB limit", len(data) // 1024)
            body = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": CONFIG_MAP, "namespace": self.namespace,
                                 "labels": {"app.kubernetes.io/managed-by": "tidal"},
                                 **({"resourceVersion": self._version} if self._version else {})},
                    "binaryData": {KEY: base64.b64encode(data).decode()}}
            try:
                if self._version is None:
                    out = self.core.create_namespaced_config_map(self.namespace, body, _request_timeout=TIMEOUT_S)
                else:
                    out = self.core.replace_namespaced_config_map(CONFIG_MAP, self.namespace, body,
                                                                  _request_timeout=TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001
                with self._lock:
                    self._dirty = True  # written next time
                if getattr(exc, "status", None) == 409:
                    raise StateError(f"ConfigMap {self.namespace}/{CONFIG_MAP} was changed by another control "
                                     f"plane: only one may run per namespace") from None
                raise StateError(describe_failure(exc, f"writing Tidal's state (ConfigMap {CONFIG_MAP})")) from None
            self._version = out.metadata.resource_version
            return True

    def close(self) -> None:
        try:
            self.sync()
        except StateError as exc:
            log.error("%s", exc)
        super().close()
