"""A service's releases at the gateway: the draw by weight, header and cookie pins, answer classes, the counts
the guards read; and in front of real replica processes, the split, the mirror and a canary's 5xx answered again
by the stable release."""

import asyncio

import orjson
import pytest

from tidal.gateway import Gateway, ReplicaEndpoint
from tidal.gateway.config import ReleaseSplit
from tidal.gateway.releases import Releases, UnknownRelease, classes_of, pinned_release
from tidal.http.client import HttpClient

SPLIT = ReleaseSplit(weights={"s-1": 90, "s-2": 10}, stable="s-1")


@pytest.mark.parametrize("draw,expected", [
    (0.0, "s-1"),      # 0 < 90: the first release in name order
    (0.8999, "s-1"),   # 89.99 < 90
    (0.9, "s-2"),      # 90 <= 90 < 100
    (0.9999, "s-2"),
])
def test_the_draw_maps_onto_the_weights_in_name_order(draw, expected):
    assert Releases(SPLIT).choose({}, lambda: draw) == (expected, False)


def test_a_release_at_zero_never_takes_a_drawn_request():
    rel = Releases(ReleaseSplit(weights={"s-1": 100, "s-2": 0}, stable="s-1"))
    assert {rel.choose({}, lambda: d / 100)[0] for d in range(100)} == {"s-1"}


@pytest.mark.parametrize("headers,expected", [
    ({"x-tidal-release": "s-2"}, "s-2"),
    ({"x-tidal-release": " s-2 "}, "s-2"),
    ({"cookie": "a=b; tidal-release=s-2; c=d"}, "s-2"),
    ({"cookie": 'tidal-release="s-1"'}, "s-1"),
    ({"cookie": "my-tidal-release=s-2"}, None),  # another cookie's name only contains it
    ({}, None),
])
def test_a_request_names_its_release_by_header_or_cookie(headers, expected):
    assert pinned_release(headers) == expected


def test_an_unknown_pinned_release_is_refused_with_the_known_ones():
    with pytest.raises(UnknownRelease, match=r"no release 's-9' \(releases: s-1, s-2\)"):
        Releases(SPLIT).choose({"x-tidal-release": "s-9"}, lambda: 0.0)


@pytest.mark.parametrize("body,expected", [
    (b'{"predictions": [[0.1, 0.9], [0.8, 0.2]]}', ("1", "0")),                  # TF predict: arg-max per row
    (b'{"predictions": [3.5, 4.0]}', ()),                                          # a regression: no class
    (b'{"predictions": [{"probabilities": [0.3, 0.7]}]}', ("1",)),                 # named outputs
    (b'{"predictions": [{"label": "positive", "probabilities": [0.3, 0.7]}]}', ("positive",)),  # with a label
    (b'{"results": [[["neg", 0.2], ["pos", 0.8]]]}', ("pos",)),                    # :classify
    (b'{"outputs": [{"name": "p", "shape": [2, 3], "data": [0, 1, 0, 0.5, 0.2, 0.3]}]}', ("1", "0")),  # V2
    (b"not json", ()),
    (b'{"error": "x"}', ()),
])
def test_answer_classes(body, expected):
    assert classes_of(body) == expected


def test_counts_over_a_window_with_p90_and_classes():
    rel = Releases(SPLIT.model_copy(update={"classes": True}))
    for i in range(10):  # at t = 100..109: latencies 0.01 .. 0.10, the last two 5xx
        rel.record("s-2", 100.0 + i, 500 if i >= 8 else 200, 0.01 * (i + 1), b'{"predictions": [[0.2, 0.8]]}')
    rel.record("gone", 105.0, 200, 0.1, None)  # a release the split does not name: not counted
    s2 = next(s for s in rel.stats(109.0, 300.0) if s.release == "s-2")
    assert (s2.requests, s2.errors, s2.classes) == (10, 2, {"1": 8})  # 5xx answers carry no class
    assert s2.p90 == pytest.approx(0.10)  # the 10th of 10 sorted: index int(0.9 * 10) = 9
    recent = next(s for s in rel.stats(109.0, 4.5) if s.release == "s-2")  # t >= 104.5: 105..109
    assert recent.requests == 5
    assert {s.release for s in rel.stats(109.0, 300.0)} == {"s-1", "s-2"}


def test_an_updated_split_keeps_the_counts_of_releases_that_stay():
    rel = Releases(SPLIT)
    rel.record("s-2", 1.0, 200, 0.01, None)
    moved = rel.update(SPLIT.model_copy(update={"weights": {"s-1": 50, "s-2": 50}}))
    assert next(s for s in moved.stats(2.0, 60) if s.release == "s-2").requests == 1


@pytest.mark.parametrize("weights", [{"a": 90, "b": 5}, {"a": 101, "b": -1}])
def test_weights_that_do_not_sum_to_100_are_refused(weights):
    with pytest.raises(ValueError, match="sum to 100"):
        ReleaseSplit(weights=weights)


# -- in front of real replica processes
def _eps(stable, canary):
    return [ReplicaEndpoint(id=stable.id, port=stable.port, release="s-1"),
            ReplicaEndpoint(id=canary.id, port=canary.port, release="s-2")]


async def _predict(client, gw, headers=()):
    body = b'{"instances": [2.0]}'
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    up = await client.request_raw("127.0.0.1", gw.port, f"POST /services/s/v1/models/m:predict HTTP/1.1\r\n{head}"
                                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body, 10.0)
    return up.status, orjson.loads(up.body).get("replica")


@pytest.mark.e2e
def test_split_pin_mirror_and_a_canary_failure_answered_by_the_stable_release(replicas):
    stable, canary = replicas("st", "ca")

    async def main():
        draws = iter([i / 100 for i in range(100)] * 10)
        gw = Gateway("127.0.0.1", 0, rand=lambda: next(draws))
        gw.set_service("s", _eps(stable, canary), releases=SPLIT)
        await gw.start()
        client = HttpClient()
        try:
            # Weights: of 100 requests with draws 0.00 .. 0.99, 10 go to the canary.
            # (one draw a request: each release has one replica, so the choice within it draws nothing)
            seen = [await _predict(client, gw) for _ in range(100)]
            assert {s for s, _ in seen} == {200}
            assert sum(1 for _, r in seen if r == "ca") == 10 and seen[90:] == [(200, "ca")] * 10
            # A pinned release, whatever the draw.
            assert {(await _predict(client, gw, [("x-tidal-release", "s-2")]))[1] for _ in range(5)} == {"ca"}
            status, _ = await _predict(client, gw, [("x-tidal-release", "s-9")])
            assert status == 400
            # The canary answers 500 to a request that may run twice: the stable release answers it again.
            gw.set_service("s", _eps(stable, canary), releases=SPLIT.model_copy(
                update={"weights": {"s-1": 0, "s-2": 100}}))
            assert await _predict(client, gw, [("x-fail-on", "ca")]) == (200, "st")
            # Unless the request named the canary: then its answer is the client's.
            assert (await _predict(client, gw, [("x-fail-on", "ca"), ("x-tidal-release", "s-2")]))[0] == 500
            counts = {s.release: s for s in gw.release_stats("s", 60)}
            assert counts["s-2"].errors == 2
            # A mirror: every request also goes to the canary; the client gets the stable release's answer.
            gw.set_service("s", _eps(stable, canary), releases=SPLIT.model_copy(
                update={"weights": {"s-1": 100, "s-2": 0}, "mirror": "s-2", "mirror_percent": 100}))
            before = {s.release: s.requests for s in gw.release_stats("s", 60)}
            assert {(await _predict(client, gw))[1] for _ in range(10)} == {"st"}
            for _ in range(50):
                await asyncio.sleep(0.02)
                after = {s.release: s.requests for s in gw.release_stats("s", 60)}
                if after["s-2"] - before["s-2"] == 10:
                    break
            assert (after["s-1"] - before["s-1"], after["s-2"] - before["s-2"]) == (10, 10)
            # One release again: no split, every ready replica shares the requests.
            gw.set_service("s", _eps(stable, canary))
            assert gw.release_stats("s", 60) == []
        finally:
            client.close()
            await gw.stop()

    asyncio.run(main())
