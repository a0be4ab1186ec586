"""ModelManager.reconfigure: models added, removed, re-pointed and their policies changed, with no request lost."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.models.conftest import half_plus_two
from tidal.clock import FakeClock
from tidal.errors import InvalidArgument, NotFound
from tidal.models.config import ModelConfig, VersionPolicy
from tidal.models.manager import ModelManager

X = np.array([2.0], np.float32)


def publish(base, version, slope):
    half_plus_two(base / str(version) / "model.onnx", slope=slope)


async def answer(m, name, **kw) -> float:
    return float((await m.resolve(name, **kw).predict("serving_default", {"x": X}))["y"][0])


@pytest.fixture
def bases(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    publish(a, 1, 1.0)
    publish(a, 2, 3.0)
    publish(b, 7, 5.0)
    return a, b


async def test_reconfigure_adds_removes_repoints_and_changes_policy(bases):
    a, b = bases
    m = ModelManager([ModelConfig(name="one", base_path=str(a))], clock=FakeClock(), poll_seconds=0)
    await m.start()
    assert await answer(m, "one") == 8.0
    # Policy change: version 1 only; a new model 'two'.
    await m.reconfigure([ModelConfig(name="one", base_path=str(a), version_policy=VersionPolicy.parse("specific:1")),
                         ModelConfig(name="two", base_path=str(b))])
    assert await answer(m, "one") == 4.0 and await answer(m, "two") == 12.0
    with pytest.raises(NotFound):
        m.resolve("one", version=2)
    # A request in flight on a model being removed finishes; new ones get NotFound.
    servable = m.resolve("two")
    inflight = asyncio.ensure_future(servable.predict("serving_default", {"x": X}))
    await m.reconfigure([ModelConfig(name="one", base_path=str(b))])  # 'two' removed, 'one' re-pointed
    assert float((await inflight)["y"][0]) == 12.0
    assert m.model_names() == ["one"] and await answer(m, "one") == 12.0
    with pytest.raises(NotFound):
        m.resolve("two")
    with pytest.raises(InvalidArgument, match="configured more than once"):
        await m.reconfigure([ModelConfig(name="x", base_path=str(a)), ModelConfig(name="x", base_path=str(b))])
    await m.stop()
