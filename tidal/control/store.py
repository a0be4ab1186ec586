"""The control plane's state in SQLite (WAL): desired objects, observed nodes and replicas, and the event log."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable

from tidal.control.records import AutoscalerMemory, AutoscalerStatus, load_memory, load_status
from tidal.errors import AlreadyExists, NotFound
from tidal.states import REPLICA_ACTIVE, REPLICA_LIVE, NodeState, ReplicaState
from tidal.spec import NodePoolSpec, ServiceSpec, VolumeSpec

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS services (
  name TEXT PRIMARY KEY, spec TEXT NOT NULL, desired INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS volumes (name TEXT PRIMARY KEY, spec TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS nodepools (
  name TEXT PRIMARY KEY, spec TEXT NOT NULL, created_at REAL NOT NULL, policy_state TEXT);
CREATE TABLE IF NOT EXISTS autoscalers (
  service TEXT PRIMARY KEY, document TEXT NOT NULL, created_at REAL NOT NULL, last TEXT, state TEXT);
CREATE TABLE IF NOT EXISTS nodes (
  name TEXT PRIMARY KEY, pool TEXT NOT NULL, zone TEXT NOT NULL, instance_type TEXT NOT NULL,
  billing TEXT NOT NULL, state TEXT NOT NULL, launched_at REAL NOT NULL, empty_since REAL,
  notified_at REAL, reclaim_at REAL, terminated_at REAL, reason TEXT NOT NULL DEFAULT '',
  cordoned INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS nodes_pool ON nodes(pool, state);
CREATE TABLE IF NOT EXISTS replicas (
  id TEXT PRIMARY KEY, service TEXT NOT NULL, release TEXT NOT NULL, node TEXT, state TEXT NOT NULL,
  port INTEGER, grpc_port INTEGER, pid INTEGER, proc_start INTEGER, created_at REAL NOT NULL,
  ready_at REAL, drain_at REAL, stopped_at REAL, reason TEXT NOT NULL DEFAULT '', ref TEXT, endpoint TEXT,
  runtime TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS replicas_service ON replicas(service, state);
CREATE TABLE IF NOT EXISTS rollouts (
  service TEXT PRIMARY KEY, record TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, kind TEXT NOT NULL,
  object TEXT NOT NULL, message TEXT NOT NULL);
"""

# Kept for readers of the old names; the groups live in tidal.states.
LIVE_REPLICA_STATES = REPLICA_LIVE
ACTIVE_REPLICA_STATES = REPLICA_ACTIVE


@dataclass(frozen=True)
class NodeRow:
    name: str
    pool: str
    zone: str
    instance_type: str
    billing: str
    state: NodeState
    launched_at: float
    empty_since: float | None = None
    notified_at: float | None = None
    reclaim_at: float | None = None
    terminated_at: float | None = None
    reason: str = ""
    cordoned: int = 0  # 1 while its replicas move elsewhere (see nodepool.Drain)


@dataclass(frozen=True)
class ReplicaRow:
    id: str
    service: str
    release: str
    node: str | None
    state: ReplicaState
    created_at: float
    ready_at: float | None = None
    drain_at: float | None = None
    stopped_at: float | None = None
    reason: str = ""
    ref: dict | None = None       # the backend's opaque handle (JSON in the store)
    endpoint: str | None = None   # "host:port" of its REST API
    runtime: str = ""             # the engine serving its model, as the replica reported when it became ready

    @property
    def port(self) -> int | None:
        return int(self.endpoint.rsplit(":", 1)[1]) if self.endpoint else None

    @property
    def host(self) -> str | None:
        return self.endpoint.rsplit(":", 1)[0] if self.endpoint else None

    @property
    def pid(self) -> int | None:
        """The local backend's process id, which `serve get` shows (None for a backend without processes)."""
        return self.ref.get("pid") if self.ref else None


@dataclass(frozen=True)
class ServiceRow:
    spec: ServiceSpec
    desired: int
    created_at: float


@dataclass
class Event:
    id: int
    time: float
    kind: str
    object: str
    message: str

    def to_dict(self) -> dict:
        return {"time": self.time, "kind": self.kind, "object": self.object, "message": self.message}


def _row(cls, r: sqlite3.Row):
    return cls(**{f.name: r[f.name] for f in fields(cls)})


def _node(r: sqlite3.Row) -> NodeRow:
    return NodeRow(**{f.name: NodeState(r[f.name]) if f.name == "state" else r[f.name] for f in fields(NodeRow)})


def _replica(r: sqlite3.Row) -> ReplicaRow:
    values = {f.name: r[f.name] for f in fields(ReplicaRow)}
    values["state"] = ReplicaState(values["state"])
    values["ref"] = json.loads(values["ref"]) if values["ref"] else None
    return ReplicaRow(**values)


def _replica_columns(rep: ReplicaRow) -> dict:
    d = asdict(rep)
    d["ref"] = json.dumps(rep.ref, separators=(",", ":")) if rep.ref is not None else None
    return d


class Store:
    """One SQLite file. Every write is its own transaction, committed before the caller acts on it."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Columns added since a database was created (CREATE TABLE IF NOT EXISTS leaves old tables as they were)."""
        for table, column, decl in (("nodes", "cordoned", "INTEGER NOT NULL DEFAULT 0"),
                                    ("autoscalers", "state", "TEXT"), ("replicas", "ref", "TEXT"),
                                    ("replicas", "endpoint", "TEXT"),
                                    ("replicas", "runtime", "TEXT NOT NULL DEFAULT ''")):
            have = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        # Rows written before the backend's opaque ref: all local processes, found by pid, start time and port.
        # The old columns stay (readable by an older version); the ref and endpoint are what is used now.
        self._db.execute(
            "UPDATE replicas SET ref=json_object('pid', pid, 'proc_start', coalesce(proc_start, 0), 'port', port, "
            "'grpc_port', coalesce(grpc_port, 0)), endpoint='127.0.0.1:' || port "
            "WHERE ref IS NULL AND pid IS NOT NULL AND port IS NOT NULL")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _q(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _x(self, sql: str, args: tuple = ()) -> int:
        with self._lock:
            cur = self._db.execute(sql, args)
            return cur.rowcount

    def transaction(self):
        return _Tx(self)

    # -- meta
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        rows = self._q("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0]["value"] if rows else default

    def set_meta(self, key: str, value: str) -> None:
        self._x("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value))

    def next_id(self, kind: str) -> int:
        """A counter that never repeats, even across restarts (names are never reused)."""
        with self._lock, self.transaction():
            n = int(self.get_meta(f"seq:{kind}", "0")) + 1
            self.set_meta(f"seq:{kind}", str(n))
            return n

    # -- services
    def create_service(self, spec: ServiceSpec, now: float) -> None:
        try:
            self._x("INSERT INTO services(name, spec, desired, created_at) VALUES(?, ?, ?, ?)",
                    (spec.name, spec.model_dump_json(), spec.replicas, now))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"service {spec.name!r} already exists (use `tidal serve update` or delete it first)") from None

    def update_service(self, spec: ServiceSpec, desired: int | None = None) -> None:
        if desired is None:
            n = self._x("UPDATE services SET spec=? WHERE name=?", (spec.model_dump_json(), spec.name))
        else:
            n = self._x("UPDATE services SET spec=?, desired=? WHERE name=?", (spec.model_dump_json(), desired, spec.name))
        if n == 0:
            raise NotFound(f"service {spec.name!r} not found")

    def set_desired(self, name: str, desired: int) -> None:
        self._x("UPDATE services SET desired=? WHERE name=?", (desired, name))

    def get_service(self, name: str) -> ServiceRow:
        rows = self._q("SELECT * FROM services WHERE name=?", (name,))
        if not rows:
            raise NotFound(f"service {name!r} not found")
        r = rows[0]
        return ServiceRow(ServiceSpec.model_validate_json(r["spec"]), r["desired"], r["created_at"])

    def list_services(self) -> list[ServiceRow]:
        return [ServiceRow(ServiceSpec.model_validate_json(r["spec"]), r["desired"], r["created_at"])
                for r in self._q("SELECT * FROM services ORDER BY name")]

    def delete_service(self, name: str) -> None:
        with self.transaction():
            if self._x("DELETE FROM services WHERE name=?", (name,)) == 0:
                raise NotFound(f"service {name!r} not found")
            self._x("DELETE FROM autoscalers WHERE service=?", (name,))
            self._x("DELETE FROM rollouts WHERE service=?", (name,))

    # -- volumes
    def put_volume(self, spec: VolumeSpec, now: float) -> None:
        self._x("INSERT INTO volumes(name, spec, created_at) VALUES(?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET spec=excluded.spec", (spec.name, spec.model_dump_json(), now))

    def get_volume(self, name: str) -> VolumeSpec:
        rows = self._q("SELECT spec FROM volumes WHERE name=?", (name,))
        if not rows:
            raise NotFound(f"volume {name!r} not found (create it with `tidal volume create` or `tidal apply -f pvc.yaml`)")
        return VolumeSpec.model_validate_json(rows[0]["spec"])

    def list_volumes(self) -> list[VolumeSpec]:
        return [VolumeSpec.model_validate_json(r["spec"]) for r in self._q("SELECT spec FROM volumes ORDER BY name")]

    def delete_volume(self, name: str) -> None:
        if self._x("DELETE FROM volumes WHERE name=?", (name,)) == 0:
            raise NotFound(f"volume {name!r} not found")

    # -- node pools
    def create_pool(self, spec: NodePoolSpec, now: float) -> None:
        try:
            self._x("INSERT INTO nodepools(name, spec, created_at) VALUES(?, ?, ?)", (spec.name, spec.model_dump_json(), now))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"node pool {spec.name!r} already exists") from None

    def update_pool(self, spec: NodePoolSpec) -> None:
        if self._x("UPDATE nodepools SET spec=? WHERE name=?", (spec.model_dump_json(), spec.name)) == 0:
            raise NotFound(f"node pool {spec.name!r} not found")

    def get_pool(self, name: str) -> NodePoolSpec:
        rows = self._q("SELECT spec FROM nodepools WHERE name=?", (name,))
        if not rows:
            raise NotFound(f"node pool {name!r} not found")
        return NodePoolSpec.model_validate_json(rows[0]["spec"])

    def list_pools(self) -> list[NodePoolSpec]:
        return [NodePoolSpec.model_validate_json(r["spec"]) for r in self._q("SELECT spec FROM nodepools ORDER BY name")]

    def get_pool_state(self, name: str) -> str | None:
        rows = self._q("SELECT policy_state FROM nodepools WHERE name=?", (name,))
        return rows[0]["policy_state"] if rows else None

    def set_pool_state(self, name: str, state: str) -> None:
        self._x("UPDATE nodepools SET policy_state=? WHERE name=?", (state, name))

    def delete_pool(self, name: str) -> None:
        if self._x("DELETE FROM nodepools WHERE name=?", (name,)) == 0:
            raise NotFound(f"node pool {name!r} not found")

    # -- autoscalers (the HPA document as given, so `parse_hpa` is the one reader)
    def put_autoscaler(self, service: str, document: dict, now: float) -> None:
        self._x("INSERT INTO autoscalers(service, document, created_at) VALUES(?, ?, ?) "
                "ON CONFLICT(service) DO UPDATE SET document=excluded.document, last=NULL, state=NULL",
                (service, json.dumps(document), now))

    def get_autoscaler(self, service: str) -> tuple[dict, dict | None] | None:
        """(the HPA document, the last status as the API shows it) or None."""
        rows = self._q("SELECT document, last FROM autoscalers WHERE service=?", (service,))
        if not rows:
            return None
        last = load_status(rows[0]["last"], service)
        return json.loads(rows[0]["document"]), last.view() if last is not None else None

    def get_autoscaler_status(self, service: str) -> AutoscalerStatus | None:
        rows = self._q("SELECT last FROM autoscalers WHERE service=?", (service,))
        return load_status(rows[0]["last"], service) if rows else None

    def set_autoscaler_last(self, service: str, last: AutoscalerStatus) -> None:
        self._x("UPDATE autoscalers SET last=? WHERE service=?", (last.model_dump_json(), service))

    def get_autoscaler_state(self, service: str) -> AutoscalerMemory | None:
        rows = self._q("SELECT state FROM autoscalers WHERE service=?", (service,))
        return load_memory(rows[0]["state"], service) if rows else None

    def set_autoscaler_state(self, service: str, state: AutoscalerMemory) -> None:
        self._x("UPDATE autoscalers SET state=? WHERE service=?", (state.model_dump_json(), service))

    def delete_autoscaler(self, service: str) -> None:
        self._x("DELETE FROM autoscalers WHERE service=?", (service,))

    # -- rollouts (a versioned JSON record each: tidal.control.releases reads and writes it)
    def get_rollout_record(self, service: str) -> str | None:
        rows = self._q("SELECT record FROM rollouts WHERE service=?", (service,))
        return rows[0]["record"] if rows else None

    def rollout_records(self) -> dict[str, str]:
        return {r["service"]: r["record"] for r in self._q("SELECT service, record FROM rollouts ORDER BY service")}

    def put_rollout_record(self, service: str, record: str, now: float) -> None:
        self._x("INSERT INTO rollouts(service, record, updated_at) VALUES(?, ?, ?) "
                "ON CONFLICT(service) DO UPDATE SET record=excluded.record, updated_at=excluded.updated_at",
                (service, record, now))

    # -- nodes
    def add_node(self, node: NodeRow) -> None:
        d = {k: str(v) if k == "state" else v for k, v in asdict(node).items()}
        self._x(f"INSERT INTO nodes({', '.join(d)}) VALUES({', '.join('?' * len(d))})", tuple(d.values()))

    def update_node(self, name: str, **changes: Any) -> None:
        sets = ", ".join(f"{k}=?" for k in changes)
        self._x(f"UPDATE nodes SET {sets} WHERE name=?", (*changes.values(), name))

    def get_node(self, name: str) -> NodeRow:
        rows = self._q("SELECT * FROM nodes WHERE name=?", (name,))
        if not rows:
            raise NotFound(f"node {name!r} not found")
        return _node(rows[0])

    def nodes(self, pool: str | None = None, *, include_terminated: bool = False,
              noticed_since: float | None = None) -> list[NodeRow]:
        sql, args = "SELECT * FROM nodes WHERE 1=1", []
        if pool is not None:
            sql += " AND pool=?"
            args.append(pool)
        if not include_terminated:
            sql += " AND state != 'terminated'"
        if noticed_since is not None:  # nodes that had a reclaim notice at or after this time
            sql += " AND notified_at >= ?"
            args.append(noticed_since)
        return [_node(r) for r in self._q(sql + " ORDER BY launched_at, name", tuple(args))]

    # -- replicas
    def add_replica(self, rep: ReplicaRow) -> None:
        d = _replica_columns(rep)
        self._x(f"INSERT INTO replicas({', '.join(d)}) VALUES({', '.join('?' * len(d))})", tuple(d.values()))

    def update_replica(self, rid: str, **changes: Any) -> None:
        if "ref" in changes:
            changes["ref"] = json.dumps(changes["ref"], separators=(",", ":")) if changes["ref"] is not None else None
        sets = ", ".join(f"{k}=?" for k in changes)
        self._x(f"UPDATE replicas SET {sets} WHERE id=?", (*changes.values(), rid))

    def get_replica(self, rid: str) -> ReplicaRow:
        rows = self._q("SELECT * FROM replicas WHERE id=?", (rid,))
        if not rows:
            raise NotFound(f"replica {rid!r} not found")
        return _replica(rows[0])

    def replicas(self, service: str | None = None, states: Iterable[str] = REPLICA_ACTIVE,
                 stopped_since: float | None = None) -> list[ReplicaRow]:
        states = sorted(str(s) for s in states)
        sql = f"SELECT * FROM replicas WHERE state IN ({', '.join('?' * len(states))})"
        args: list = list(states)
        if service is not None:
            sql += " AND service=?"
            args.append(service)
        if stopped_since is not None:
            sql += " AND stopped_at >= ?"
            args.append(stopped_since)
        return [_replica(r) for r in self._q(sql + " ORDER BY created_at, id", tuple(args))]

    # -- events
    MAX_EVENTS = 100_000

    def add_event(self, time: float, kind: str, obj: str, message: str) -> None:
        with self._lock:
            cur = self._db.execute("INSERT INTO events(time, kind, object, message) VALUES(?, ?, ?, ?)",
                                   (time, kind, obj, message))
            # The log is bounded: every thousandth event drops those older than the last MAX_EVENTS.
            if cur.lastrowid % 1000 == 0:
                self._db.execute("DELETE FROM events WHERE id <= ?", (cur.lastrowid - self.MAX_EVENTS,))

    def events(self, since_id: int = 0, limit: int = 1000, obj: str | None = None) -> list[Event]:
        sql, args = "SELECT * FROM events WHERE id > ?", [since_id]
        if obj:
            sql += " AND (object = ? OR object LIKE ?)"
            args += [obj, f"%/{obj}"]
        rows = self._q(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))
        return [_row(Event, r) for r in reversed(rows)]


class _Tx:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.depth_key = "_tx_depth"

    def __enter__(self):
        s = self.store
        s._lock.acquire()
        depth = getattr(s, self.depth_key, 0)
        if depth == 0:
            s._db.execute("BEGIN IMMEDIATE")
        setattr(s, self.depth_key, depth + 1)
        return s

    def __exit__(self, exc_type, exc, tb) -> None:
        s = self.store
        depth = getattr(s, self.depth_key) - 1
        setattr(s, self.depth_key, depth)
        try:
            if depth == 0:
                s._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            s._lock.release()

