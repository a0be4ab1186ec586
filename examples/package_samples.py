"""Builds the sample models that ship inside the package (tidal/samples/) from the builders in this folder.

Run it after changing a builder or its data: `.venv/bin/python examples/package_samples.py` (the SavedModel
twin needs the `tensorflow` extra; without TensorFlow only the ONNX model and hpa.yaml are refreshed).
tests/product/test_samples.py checks that the shipped files answer as freshly built ones do.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = HERE.parent / "tidal" / "samples"


def _builder(name: str):
    spec = importlib.util.spec_from_file_location(f"tidal_example_{name}_build", HERE / name / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _replace(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("assets"))  # empty in both models
    print(f"wrote {dst.relative_to(HERE.parent)}")


def main() -> int:
    from tidal.samples import SENTIMENT_VERSION

    with tempfile.TemporaryDirectory() as tmp:
        onnx_dir = _builder("sentiment").build(Path(tmp) / "onnx", SENTIMENT_VERSION).parent
        _replace(onnx_dir, TARGET / "sentiment")
        if importlib.util.find_spec("tensorflow"):
            _replace(_builder("sentiment_tf").build(Path(tmp) / "tf", SENTIMENT_VERSION), TARGET / "sentiment_tf")
        else:
            print("TensorFlow is not installed: tidal/samples/sentiment_tf left as it is", file=sys.stderr)
    shutil.copyfile(HERE / "reference-procedure" / "hpa.yaml", TARGET / "hpa.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
