"""A state database written by the previous version (replicas found by pid and port, pickled policy state,
unversioned autoscaler records) opens, and a control plane started on it adopts the replicas still running."""

import json
import os
import sqlite3
import time

import pytest

from tidal.backends.base import ReplicaLaunch
from tidal.backends.local import LocalBackend, proc_start_time
from tidal.capacity.catalog import Catalog, InstanceType
from tidal.clock import FakeClock
from tidal.control.home import Home
from tidal.control.reconciler import Reconciler
from tidal.control.store import Store

from .fakes import FakeGateway

# The previous version's tables, as it created them.
OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE services (name TEXT PRIMARY KEY, spec TEXT NOT NULL, desired INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE TABLE volumes (name TEXT PRIMARY KEY, spec TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE nodepools (name TEXT PRIMARY KEY, spec TEXT NOT NULL, created_at REAL NOT NULL, policy_state TEXT);
CREATE TABLE autoscalers (service TEXT PRIMARY KEY, document TEXT NOT NULL, created_at REAL NOT NULL, last TEXT,
  state TEXT);
CREATE TABLE nodes (
  name TEXT PRIMARY KEY, pool TEXT NOT NULL, zone TEXT NOT NULL, instance_type TEXT NOT NULL,
  billing TEXT NOT NULL, state TEXT NOT NULL, launched_at REAL NOT NULL, empty_since REAL,
  notified_at REAL, reclaim_at REAL, terminated_at REAL, reason TEXT NOT NULL DEFAULT '',
  cordoned INTEGER NOT NULL DEFAULT 0);
CREATE TABLE replicas (
  id TEXT PRIMARY KEY, service TEXT NOT NULL, release TEXT NOT NULL, node TEXT, state TEXT NOT NULL,
  port INTEGER, grpc_port INTEGER, pid INTEGER, proc_start INTEGER, created_at REAL NOT NULL,
  ready_at REAL, drain_at REAL, stopped_at REAL, reason TEXT NOT NULL DEFAULT '');
CREATE TABLE events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, kind TEXT NOT NULL,
  object TEXT NOT NULL, message TEXT NOT NULL);
"""


@pytest.fixture
def backend(tmp_path):
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")  # a model server that runs (its marker is in its environment)
    fake.chmod(0o755)
    b = LocalBackend(tmp_path / "home", python=str(fake), gpus=0)
    yield b
    for proc in list(b._children.values()):
        proc.kill()
        proc.wait()


def test_a_database_from_the_previous_version_adopts_its_running_replicas(tmp_path, backend):
    launch = ReplicaLaunch(replica="svc-1", service="svc", node="p-spot-1", model_name="m", model_base_path="/m",
                           version_policy="latest", gpus=0)
    running = backend.start_replica(launch)
    stray = backend.start_replica(ReplicaLaunch(**{**launch.__dict__, "replica": "svc-2"}))  # never recorded
    for _ in range(50):
        if proc_start_time(running.ref["pid"]) and proc_start_time(stray.ref["pid"]):
            break
        time.sleep(0.02)
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    spec = {"name": "svc", "version": "1", "model_name": "m", "model_path": "/m"}
    db.execute("INSERT INTO services VALUES ('svc', ?, 1, 0)", (json.dumps(spec),))
    db.execute("INSERT INTO nodepools VALUES ('p', ?, 0, 'gASVKAAAAAAAAACMA2Vzc5Qu')",
               (json.dumps({"name": "p", "instance_types": ["cpu.large"]}),))
    db.execute("INSERT INTO autoscalers VALUES ('svc', '{}', 0, ?, ?)",
               (json.dumps({"time": 5.0, "current": 1, "desired": 2, "reason": "ScaleUpLimit", "message": "m",
                            "qps": 12.5, "metrics": []}),
                json.dumps({"recommendations": [[2, 5.0]], "up": [[1, 5.0, False]], "down": []})))
    db.execute("INSERT INTO nodes (name, pool, zone, instance_type, billing, state, launched_at) "
               "VALUES ('p-spot-1', 'p', 'z-a', 'cpu.large', 'spot', 'ready', 0)")
    db.execute("INSERT INTO replicas (id, service, release, node, state, port, grpc_port, pid, proc_start, created_at,"
               " ready_at) VALUES ('svc-1', 'svc', 'r', 'p-spot-1', 'ready', ?, ?, ?, ?, 0, 1)",
               (running.ref["port"], running.ref["grpc_port"], running.ref["pid"], running.ref["proc_start"]))
    db.commit()
    db.close()

    store = Store(path)
    rep = store.get_replica("svc-1")
    # An old row knows no model name: the ref rebuilt from its columns is the rest of what the backend keeps.
    assert rep.ref == {k: v for k, v in running.ref.items() if k != "model"}
    assert rep.endpoint == running.endpoint and rep.pid == running.ref["pid"]
    # The autoscaler's records of before: migrated as they were (no version then).
    document, last = store.get_autoscaler("svc")
    assert last == {"time": 5.0, "current": 1, "desired": 2, "reason": "ScaleUpLimit", "message": "m", "qps": 12.5,
                    "metrics": []}
    assert [(r.replicas, r.timestamp) for r in store.get_autoscaler_state("svc").hpa.recommendations] == [(2, 5.0)]

    cat = Catalog([InstanceType(name="cpu.large", vcpu=4, memory_gib=16, gpus=0, on_demand_price=0.4)])
    r = Reconciler(store, backend, FakeGateway(), cat, FakeClock(100.0), Home(tmp_path / "home"))
    r.adopt()
    assert store.get_replica("svc-1").state == "ready"
    kinds = {(e.kind, e.object) for e in store.events()}
    assert ("ReplicaAdopted", "replica/svc-1") in kinds and ("ReplicaKilled", "replica/svc-2") in kinds
    assert backend._alive("svc-1", running.ref)
    for _ in range(100):
        if not backend._alive("svc-2", stray.ref):
            break
        time.sleep(0.02)
    assert not backend._alive("svc-2", stray.ref)
    os.kill(running.ref["pid"], 9)


def test_an_autoscaler_record_of_an_unknown_version_is_dropped_with_a_line(tmp_path, caplog):
    store = Store(tmp_path / "state.db")
    store._x("INSERT INTO autoscalers VALUES ('svc', '{}', 0, ?, ?)",
             (json.dumps({"version": 99, "time": 1}), "not json"))
    with caplog.at_level("WARNING"):
        assert store.get_autoscaler("svc") == ({}, None)
        assert store.get_autoscaler_state("svc") is None
    assert any("version 99" in m and "dropped" in m for m in caplog.messages)
    assert any("unreadable" in m for m in caplog.messages)
