"""The warm pool's pure decisions: what to start (with a fake clock), which process to hand out, who starts cold."""

import pytest

from tidal.backends.warmpool_decide import (Deaths, Flavour, PoolView, Refill, SlotState, SlotView, Spawn,
                                            WarmPoolSettings, backoff, choose, model_flavour, plan_refill, unfit)
from tidal.errors import UserError

ONNX, TF = Flavour.ONNX, Flavour.TENSORFLOW
S = WarmPoolSettings(size=1, refill_delay_seconds=1.0, max_backoff_seconds=60.0)


def slots(*specs):
    return tuple(SlotView(i, f, st) for i, (f, st) in enumerate(specs, start=1))


W, ST = SlotState.WARM, SlotState.STARTING


@pytest.mark.parametrize("view, now, settings, want", [
    # Empty pool, ONNX in use: start one at once.
    (PoolView((), frozenset({ONNX})), 0.0, S, Refill((Spawn(ONNX),), None)),
    # Two per runtime, both runtimes in use.
    (PoolView((), frozenset({ONNX, TF})), 0.0, S.model_copy(update={"size": 2}),
     Refill((Spawn(ONNX), Spawn(ONNX), Spawn(TF), Spawn(TF)), None)),
    # A starting process counts: nothing more to start.
    (PoolView(slots((ONNX, ST)), frozenset({ONNX})), 0.0, S, Refill((), None)),
    # Just assigned: the replica loads first, its replacement starts after the delay.
    (PoolView((), frozenset({ONNX}), last_assigned={ONNX: 10.0}), 10.5, S, Refill((), 11.0)),
    (PoolView((), frozenset({ONNX}), last_assigned={ONNX: 10.0}), 11.0, S, Refill((Spawn(ONNX),), None)),
    # Deaths in a row back off: 1 s after the first, 4 s after the third, capped.
    (PoolView((), frozenset({ONNX}), deaths={ONNX: Deaths(1, 5.0)}), 5.5, S, Refill((), 6.0)),
    (PoolView((), frozenset({ONNX}), deaths={ONNX: Deaths(3, 5.0)}), 8.0, S, Refill((), 9.0)),
    (PoolView((), frozenset({ONNX}), deaths={ONNX: Deaths(3, 5.0)}), 9.0, S, Refill((Spawn(ONNX),), None)),
    (PoolView((), frozenset({ONNX}), deaths={ONNX: Deaths(30, 5.0)}), 64.0, S, Refill((), 65.0)),
    # One runtime waiting does not hold the other back.
    (PoolView((), frozenset({ONNX, TF}), last_assigned={TF: 3.0}), 3.2, S, Refill((Spawn(ONNX),), 4.0)),
    # Off: nothing.
    (PoolView((), frozenset({ONNX})), 0.0, S.model_copy(update={"size": 0}), Refill((), None)),
])
def test_refill(view, now, settings, want):
    assert plan_refill(view, now, settings) == want


@pytest.mark.parametrize("count, pause", [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (50, 60.0)])
def test_backoff(count, pause):
    assert backoff(Deaths(count, 0.0), S) == pause


@pytest.mark.parametrize("pool, want, chosen", [
    ((), ONNX, None),
    (((ONNX, ST),), ONNX, None),                 # importing: not handed out
    (((ONNX, W),), ONNX, 1),
    (((TF, W), (ONNX, W)), ONNX, 2),             # the exact runtime first: TensorFlow's stays for a SavedModel
    (((TF, W),), ONNX, 1),                       # TensorFlow's has ONNX Runtime imported too
    (((ONNX, W), (TF, W)), TF, 2),
    (((ONNX, W), (TF, ST)), TF, 1),              # still saves the interpreter and tidal's imports
    (((ONNX, W), (TF, W)), None, 2),             # runtime unknown: the one that has both
    (((ONNX, ST), (ONNX, W)), None, 2),
])
def test_choose(pool, want, chosen):
    assert choose(slots(*pool), want) == chosen


@pytest.mark.parametrize("replica, env, pool_cuda, reason", [
    ("svc-1", {}, None, None),
    ("svc-1", {"OSS_ACCESS_KEY_SECRET": "x", "TIDAL_LOG_LEVEL": "debug"}, None, None),
    ("svc-1", {"CUDA_VISIBLE_DEVICES": ""}, "", None),
    ("svc-1", {"CUDA_VISIBLE_DEVICES": "0"}, "", "pinned to GPUs"),
    ("svc-1", {"CUDA_VISIBLE_DEVICES": None}, "", "pinned to GPUs"),
    ("svc-1", {"OMP_NUM_THREADS": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}, None, "OMP_NUM_THREADS, TF_ENABLE_ONEDNN_OPTS"),
    ("r" * 199, {}, None, "longer than"),
    ("r" * 198, {}, None, None),
])
def test_who_starts_cold(replica, env, pool_cuda, reason):
    got = unfit(replica, {k: v for k, v in env.items() if v is not None} if pool_cuda is None else env, pool_cuda)
    assert (got is None) if reason is None else (reason in got), got


@pytest.mark.parametrize("text, size", [("", 1), ("on", 1), ("off", 0), ("0", 0), ("3", 3)])
def test_settings_from_env(text, size):
    s = WarmPoolSettings.from_env({"TIDAL_WARM_POOL": text} if text else {})
    assert s.size == size and s.enabled == (size > 0)


@pytest.mark.parametrize("text", ["lots", "-1", "17"])
def test_bad_settings_are_one_line(text):
    with pytest.raises(UserError, match="TIDAL_WARM_POOL must be on, off or a number"):
        WarmPoolSettings.from_env({"TIDAL_WARM_POOL": text})


def test_model_flavour_follows_the_latest_version(tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "model.onnx").write_bytes(b"")
    assert model_flavour(str(tmp_path / "m")) is ONNX
    assert model_flavour(f"file://{tmp_path / 'm'}") is ONNX
    (tmp_path / "m" / "2").mkdir()
    (tmp_path / "m" / "2" / "saved_model.pb").write_bytes(b"")
    assert model_flavour(str(tmp_path / "m")) is TF
    for unknown in (str(tmp_path / "none"), "s3://bucket/m", str(tmp_path)):
        assert model_flavour(unknown) is None


@pytest.mark.parametrize("files", [["model.onnx"], ["Model.ONNX", "x"], ["saved_model.pb", "variables"],
                                   ["saved_model.pbtxt"], ["saved_model.pb", "model.onnx"], ["README"], []])
def test_the_guess_agrees_with_the_model_servers_registry(tmp_path, files):
    from tidal.errors import FailedPrecondition
    from tidal.models.runtimes import detect
    (tmp_path / "m" / "7").mkdir(parents=True)
    for f in files:
        (tmp_path / "m" / "7" / f).write_bytes(b"")
    try:
        expected = Flavour(detect(str(tmp_path / "m" / "7")))
    except FailedPrecondition:
        expected = None
    assert model_flavour(str(tmp_path / "m")) is expected
