"""Without TensorFlow, a SavedModel version is reported with an error naming the extra to install."""

from __future__ import annotations

import asyncio
import sys

from tidal.models.config import ModelConfig
from tidal.models.manager import ModelManager


def test_a_saved_model_without_tensorflow_names_the_extra(tmp_path, monkeypatch):
    # None in sys.modules makes `import tensorflow` raise ImportError, as on a machine without it.
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    monkeypatch.delitem(sys.modules, "tidal.models.runtimes.tensorflow", raising=False)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"")

    async def scenario():
        manager = ModelManager([ModelConfig(name="m", base_path=str(tmp_path))], poll_seconds=0)
        await manager.start()
        try:
            return manager.status("m")
        finally:
            await manager.stop()

    (status,) = asyncio.run(scenario())
    assert status.version == 1 and status.state.value == "END"
    assert status.error_code == "FAILED_PRECONDITION"
    assert "pip install tidal[tensorflow]" in status.error_message
