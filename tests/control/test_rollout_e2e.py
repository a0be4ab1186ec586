"""Safe rollouts end to end with real processes on 127.0.0.1: control plane, gateway process, model servers.

One control plane serves `hpt` (half_plus_two, y = x/2 + 2) and `senti` (the sample sentiment
classifier). The canaries are real models too: half_plus_three (y = x/2 + 3), so each answer
tells which release gave it; a broken graph whose every run fails (the model server answers
500); the sentiment classifier retrained badly.
- a 10% canary gets 10% +/- 2 of 5,000 requests; the header pins a release; bad
  input (weights that do not sum to 100, an unknown release, two rollouts at once,
  promote with no canary) gets one line each and changes nothing;
- a canary that answers 500s is rolled back by its guard well within its bake time,
  and no client sees an error (its failed requests are answered by the stable release);
- a stepped promotion under 50 req/s loses no request and ends on the new release;
- a classifier retrained badly (it calls everything positive) is rolled back by its class-share guard.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ..conftest import load_example
from .test_e2e import tear_down, tidal, tidal_json, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400)]

MODEL = "half_plus_two"
BODY = json.dumps({"instances": [2.0]}).encode()
STABLE, PLUS_THREE = 3.0, 4.0  # what each model answers for 2.0


def _plus_three(base) -> None:
    model = load_example("half_plus_two").make_model()
    for init in model.graph.initializer:
        if init.name == "b":
            init.CopyFrom(numpy_helper.from_array(np.array(3.0, dtype=np.float32), name="b"))
    (base / "1").mkdir(parents=True)
    onnx.save_model(model, str(base / "1" / "model.onnx"))


def _broken(base) -> None:
    """A graph that loads but cannot run on any batch but seven: every request here is a 500 (a run failure)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])
    shape = numpy_helper.from_array(np.array([7], dtype=np.int64), name="shape")
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "broken", [x], [y],
                              initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (base / "1").mkdir(parents=True)
    onnx.save_model(model, str(base / "1" / "model.onnx"))


class Client:
    """Keep-alive predict calls to the gateway from one thread: (status, answer for 2.0 or None)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def predict(self, headers: dict | None = None) -> tuple[int, float | None]:
        for attempt in (0, 1):
            try:
                self.conn.request("POST", self.path, BODY, {"Content-Type": "application/json", **(headers or {})})
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt:
                    raise
        value = json.loads(data)["predictions"][0] if resp.status == 200 else None
        return resp.status, value


def _biased_sentiment(base) -> None:
    """The sample sentiment classifier retrained badly: its intercept pushed so far that it calls everything
    positive (it loads and answers 200; only its answers' classes give it away)."""
    sentiment = load_example("sentiment")
    pipeline = sentiment.train()
    pipeline.named_steps["classifier"].intercept_ += 50.0
    (base / "2").mkdir(parents=True)
    onnx.save_model(sentiment.to_onnx(pipeline), str(base / "2" / "model.onnx"))


@pytest.fixture(scope="module")
def plane(tmp_path_factory, half_plus_two_base, sentiment_base):
    tmp = tmp_path_factory.mktemp("rollout")
    home = (tmp / "tidal-home").resolve()
    bucket = tmp / "bucket"
    bucket.mkdir()
    (bucket / MODEL).symlink_to(half_plus_two_base)
    _plus_three(bucket / "plus-three")
    _broken(bucket / "broken")
    (bucket / "sentiment").symlink_to(sentiment_base)
    _biased_sentiment(bucket / "sentiment-biased")
    try:
        tidal(home, "up", "--port", "0", "--gateway-port", "0", "--tick", "2")
        tidal(home, "nodepool", "create", "cpu-pool", "--label", "tier=cpu", "--instance-types", "ecs.c6.large",
              "--max", "4")
        tidal(home, "volume", "create", "models", "--url", f"file://{bucket}")
        tidal(home, "serve", "onnx", "--name=hpt", f"--model-name={MODEL}", "--selector=tier=cpu", "--version=1",
              "--data=models:/models", f"--model-path=/models/{MODEL}", "--replicas", "1")
        tidal(home, "serve", "onnx", "--name=senti", "--model-name=sentiment", "--selector=tier=cpu", "--version=1",
              "--data=models:/models", "--model-path=/models/sentiment", "--replicas", "1")
        wait_for("hpt is available", lambda: tidal_json(home, "serve", "get", "hpt")["available"] == 1, 90)
        gateway = json.loads((home / "address.json").read_text())["gateway"]
        yield home, f"{gateway}/services/hpt/v1/models/{MODEL}:predict"
    finally:
        tear_down(home)


def _rollout(home) -> dict:
    return tidal_json(home, "serve", "get", "hpt")["rollout"]


def _canary_ready(home) -> bool:
    r = _rollout(home)
    return bool(r) and r["releases"][1]["ready"] >= 1


def _refused(home, *argv: str) -> str:
    done = tidal(home, *argv, check=False)
    assert done.returncode != 0, done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_a_ten_percent_canary_gets_ten_percent_and_bad_input_changes_nothing(plane):
    home, url = plane
    out = tidal(home, "serve", "update", "hpt", "--canary-traffic-percent", "10", "--version", "2",
                "--model-path", "/models/plus-three").stdout
    assert "canary hpt-2 started at 10% beside hpt-1" in out
    wait_for("the canary is ready", lambda: _canary_ready(home), 90)

    # Bad input: one line each, the rollout as it was.
    before = _rollout(home)
    assert "weights sum to 95, not 100" in _refused(home, "serve", "traffic", "hpt", "hpt-1=90", "hpt-2=5")
    assert "has no release 'hpt-9'" in _refused(home, "serve", "traffic", "hpt", "hpt-1=90", "hpt-9=10")
    assert "already has a rollout in progress" in _refused(
        home, "serve", "update", "hpt", "--canary-traffic-percent", "20", "--version", "3",
        "--model-path", "/models/plus-three")
    after = _rollout(home)
    assert (after["weight"], after["canary"], after["phase"]) == (before["weight"], before["canary"], before["phase"])

    # 5,000 requests from four clients: the canary answers 10% +/- 2.
    answers: list[tuple[int, float | None]] = []
    lock = threading.Lock()

    def load(n: int) -> None:
        c = Client(url)
        got = [c.predict() for _ in range(n)]
        with lock:
            answers.extend(got)

    threads = [threading.Thread(target=load, args=(1250,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 5000 and all(status == 200 for status, _ in answers)
    canary = sum(1 for _, v in answers if v == PLUS_THREE)
    assert sum(1 for _, v in answers if v == STABLE) + canary == 5000
    assert 400 <= canary <= 600, canary

    # The header (or cookie) pins a release, whatever the weights.
    c = Client(url)
    assert {c.predict({"x-tidal-release": "hpt-2"})[1] for _ in range(20)} == {PLUS_THREE}
    assert {c.predict({"Cookie": "a=b; tidal-release=hpt-1"})[1] for _ in range(20)} == {STABLE}
    assert c.predict({"x-tidal-release": "hpt-7"})[0] == 400

    # Blue-green by hand: all traffic to the canary (arena's flags), then back.
    out = tidal(home, "serve", "traffic-router-split", "--name", "hpt", "--version-weight", "1:0",
                "--version-weight", "2:100").stdout
    assert "hpt-1=0, hpt-2=100" in out
    wait_for("every request goes to the canary", lambda: {c.predict()[1] for _ in range(20)} == {PLUS_THREE}, 20,
             interval=0.2)
    out = tidal(home, "serve", "rollback", "hpt").stdout
    assert "back on hpt-1" in out
    wait_for("every request goes to the stable release", lambda: {c.predict()[1] for _ in range(20)} == {STABLE}, 20,
             interval=0.2)
    assert _rollout(home)["phase"] == "rolled-back"
    assert "has no canary to promote" in _refused(home, "serve", "promote", "hpt")
    kinds = [e["kind"] for e in tidal_json(home, "events", "--object", "service/hpt")]
    assert {"RolloutStarted", "RolloutTraffic", "RolloutRolledBack"} <= set(kinds)
    assert _rollout(home)["releases"][1]["ready"] == 0  # the canary's replica drains: it takes no new request


def test_a_canary_answering_500s_is_rolled_back_before_any_client_sees_one(plane):
    home, url = plane
    bake = 120
    tidal(home, "serve", "update", "hpt", "--canary-traffic-percent", "20", "--version", "4",
          "--model-path", "/models/broken", "--steps", "20,50,100", "--bake", f"{bake}s", "--min-requests", "10")
    wait_for("the broken canary is ready", lambda: _canary_ready(home), 90)
    started = time.monotonic()
    c = Client(url)
    statuses: list[int] = []
    while time.monotonic() - started < bake and _rollout(home)["phase"] != "rolled-back":
        for _ in range(25):
            statuses.append(c.predict()[0])
    took = time.monotonic() - started
    r = _rollout(home)
    assert r["phase"] == "rolled-back", r
    assert took < bake / 2, took
    assert "guard failed: error rate" in r["reason"]
    assert statuses and set(statuses) == {200}  # the stable release answered every request the canary failed
    events = [e for e in tidal_json(home, "events", "--object", "service/hpt") if e["kind"] == "RolloutRolledBack"]
    assert "hpt-4 rolled back to hpt-1" in events[-1]["message"] and "error rate" in events[-1]["message"]
    assert {c.predict()[1] for _ in range(20)} == {STABLE}


def test_a_promotion_under_50_requests_a_second_loses_nothing(plane):
    home, url = plane
    tidal(home, "serve", "update", "hpt", "--canary-traffic-percent", "50", "--version", "5",
          "--model-path", "/models/plus-three", "--steps", "50,100", "--bake", "2s")
    stop = threading.Event()
    answers: list[tuple[int, float | None]] = []

    def load() -> None:
        c = Client(url)
        nxt = time.monotonic()
        while not stop.is_set():
            answers.append(c.predict())
            nxt += 1 / 25
            time.sleep(max(0.0, nxt - time.monotonic()))

    threads = [threading.Thread(target=load) for _ in range(2)]  # 2 x 25 = 50 requests a second
    for t in threads:
        t.start()
    try:
        wait_for("the rollout is promoted", lambda: _rollout(home)["phase"] == "promoted", 120)
        wait_for("only the new release's replicas remain", lambda: {
            r["state"] for r in tidal_json(home, "serve", "get", "hpt")["replicas"]} == {"ready"}
            and tidal_json(home, "serve", "get", "hpt")["version"] == "5", 90)
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(answers) > 200
    assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:5]
    assert answers[-1][1] == PLUS_THREE
    steps = [e["message"] for e in tidal_json(home, "events", "--object", "service/hpt")
             if e["kind"] in ("RolloutStep", "RolloutPromoted")]
    assert any("step 2/2: canary hpt-5 at 100%" in m for m in steps)
    assert "hpt-5 promoted over hpt-1" in steps[-1]


def test_a_classifier_whose_classes_shift_is_rolled_back(plane):
    home, url = plane
    url = url.replace("/services/hpt/v1/models/half_plus_two:", "/services/senti/v1/models/sentiment:")
    wait_for("senti is available", lambda: tidal_json(home, "serve", "get", "senti")["available"] == 1, 90)
    tidal(home, "serve", "update", "senti", "--canary-traffic-percent", "50", "--version", "2",
          "--model-path", "/models/sentiment-biased", "--max-class-shift", "0.2", "--min-requests", "20")
    wait_for("the biased canary is ready", lambda: tidal_json(home, "serve", "get", "senti")["rollout"]
             ["releases"][1]["ready"] >= 1, 90)
    data = load_example("sentiment").load_data()
    texts = data.test_texts[:60]
    c = Client(url)
    labels = []
    started = time.monotonic()
    while tidal_json(home, "serve", "get", "senti")["rollout"]["phase"] != "rolled-back":
        assert time.monotonic() - started < 60, "the class guard did not roll the canary back"
        for text in texts[:20]:
            c.conn.request("POST", c.path, json.dumps({"instances": [text]}), {"Content-Type": "application/json"})
            resp = c.conn.getresponse()
            assert resp.status == 200
            labels.append(json.loads(resp.read())["predictions"][0]["label"])
        texts = texts[20:] + texts[:20]
    r = tidal_json(home, "serve", "get", "senti")["rollout"]
    assert "guard failed: class negative is 0% of the canary's answers" in r["reason"], r["reason"]
    assert {"negative", "positive"} <= set(labels)
