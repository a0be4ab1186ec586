"""Sample models and YAML shipped inside the package, so `tidal demo` runs from an installed wheel.

The files are built by the builders in the repository's examples/ (`examples/package_samples.py` writes them
here): `sentiment/` is the ONNX text classifier, `sentiment_tf/` its TensorFlow SavedModel twin, `hpa.yaml`
the reference procedure's HorizontalPodAutoscaler verbatim. Both models take `text` (string [-1]) and answer
`label` (negative|positive) and `probabilities` [negative, positive].
"""

from __future__ import annotations

import importlib.util
import shutil
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import ContextManager

SENTIMENT_VERSION = 1623831335  # the reference procedure's `--version-policy=specific:1623831335`


def _copy_tree(src: Traversable, dst: Path) -> None:
    """Copy a package-data folder (importlib.resources cannot hand out folders before Python 3.12)."""
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_dir():
            if item.name != "__pycache__":
                _copy_tree(item, dst / item.name)
        else:
            (dst / item.name).write_bytes(item.read_bytes())


def sentiment_runtime() -> str:
    """`tensorflow` when TensorFlow is installed (the reference procedure serves a SavedModel), else `onnx`."""
    return "tensorflow" if importlib.util.find_spec("tensorflow") else "onnx"


def install_sentiment(base_path: str | Path, runtime: str | None = None,
                      version: int = SENTIMENT_VERSION) -> Path:
    """Write the sentiment model under `<base_path>/<version>/` in TF Serving's layout; return that folder."""
    runtime = runtime or sentiment_runtime()
    folders = {"onnx": "sentiment", "tensorflow": "sentiment_tf"}
    if runtime not in folders:
        raise ValueError(f"runtime must be one of {', '.join(folders)}, got {runtime!r}")
    target = Path(base_path) / str(version)
    if target.exists():
        shutil.rmtree(target)
    _copy_tree(resources.files(__name__).joinpath(folders[runtime]), target)
    return target


def hpa_yaml() -> ContextManager[Path]:
    """A real file holding the reference procedure's hpa.yaml, for `tidal apply -f` (a context manager)."""
    return resources.as_file(resources.files(__name__).joinpath("hpa.yaml"))
