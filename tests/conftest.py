"""Shared test fixtures: loading the sample-model builders in examples/ and building them once per session."""

from __future__ import annotations

import importlib.util
import signal
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = REPO_ROOT / "examples"


def pytest_configure(config) -> None:
    """Child processes get Ctrl-C as a user's would: pytest-xdist's workers ignore SIGINT, and an ignored signal
    stays ignored across exec, so a `tidal ... --watch` started by a test would never see the test's SIGINT."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def load_example(name: str) -> ModuleType:
    """Import `examples/<name>/build.py` by file path (examples/ is not an installed package)."""
    module_name = f"tidal_example_{name}_build"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = EXAMPLES_DIR / name / "build.py"
    if not path.is_file():
        raise FileNotFoundError(f"no builder at {path}")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    # Registered before exec so dataclasses and pickling inside the builder can find it.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _built(tmp_path_factory, name: str) -> Path:
    """A fresh model base path with the example `name` built into it (TensorFlow examples skip without it)."""
    if name.endswith("_tf"):
        pytest.importorskip("tensorflow", reason="TensorFlow is not installed (pip install tidal[tensorflow])")
    base = tmp_path_factory.mktemp(name)
    load_example(name).build(base)
    return base


@pytest.fixture(scope="session")
def half_plus_two_base(tmp_path_factory) -> Path:
    """Model base path holding half_plus_two version 123 (`<base>/123/model.onnx`)."""
    return _built(tmp_path_factory, "half_plus_two")


@pytest.fixture(scope="session")
def sentiment_base(tmp_path_factory) -> Path:
    """Model base path holding the sentiment classifier version 1623831335."""
    return _built(tmp_path_factory, "sentiment")


@pytest.fixture(scope="session")
def half_plus_two_tf_base(tmp_path_factory) -> Path:
    """Model base path holding half_plus_two as a TensorFlow SavedModel, version 123 (needs TensorFlow)."""
    return _built(tmp_path_factory, "half_plus_two_tf")


@pytest.fixture(scope="session")
def sentiment_tf_base(tmp_path_factory) -> Path:
    """Model base path holding the Keras sentiment SavedModel, version 1623831335 (needs TensorFlow)."""
    return _built(tmp_path_factory, "sentiment_tf")
