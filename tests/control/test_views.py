"""The API's JSON views (cli.md's output contract) built from store rows: pure."""

from tidal.control.store import ReplicaRow, ServiceRow
from tidal.control.views import service_view
from tidal.spec import ServiceSpec
from tidal.states import ReplicaState as S

SPEC = ServiceSpec(name="broken", version="1", model_name="m", model_path="/nope")


def rep(rid, state, stopped_at=None, reason=""):
    return ReplicaRow(id=rid, service="broken", release="r", node="n1", state=state, created_at=0.0,
                      stopped_at=stopped_at, reason=reason)


def test_serve_get_names_the_latest_failures_with_their_reasons():
    reps = [rep("a", S.FAILED, 10.0, "model m: model base path /nope does not exist"),
            rep("b", S.FAILED, 30.0, "model m: model base path /nope does not exist"),
            rep("c", S.STARTING), rep("d", S.FAILED, 20.0, "its process exited"),
            rep("e", S.FAILED, 5.0, "oldest: not shown"), rep("f", S.STOPPED, 40.0, "scaled in")]
    view = service_view(ServiceRow(SPEC, 1, 0.0), reps, "http://127.0.0.1:8501")
    # newest first, at most three; the starting replica is the only one listed as a replica
    assert [f["name"] for f in view["failures"]] == ["b", "d", "a"]
    assert view["failures"][0]["reason"] == "model m: model base path /nope does not exist"
    assert [r["name"] for r in view["replicas"]] == ["c"] and view["available"] == 0


def test_no_failures_is_an_empty_list():
    assert service_view(ServiceRow(SPEC, 1, 0.0), [rep("c", S.READY)], "http://x")["failures"] == []
