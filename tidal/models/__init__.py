"""Versioned models from a repository, their runtimes, and dynamic batching."""

from __future__ import annotations

import importlib

# Names resolve on first use, so that `tidal.models.config` (which the control plane's specs
# import) does not pull in numpy and the serving machinery.
_EXPORTS = {
    "BatchingOptions": "config", "ModelConfig": "config", "RuntimeOptions": "config", "VersionPolicy": "config",
    "VersionState": "lifecycle", "VersionStatus": "lifecycle",
    "ModelManager": "manager", "Servable": "servable",
    "Signature": "signatures", "TensorSpec": "signatures", "PREDICT": "signatures", "CLASSIFY": "signatures",
    "REGRESS": "signatures", "DEFAULT_SIGNATURE": "signatures", "CLASSIFY_SIGNATURE": "signatures",
    "REGRESS_SIGNATURE": "signatures",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tidal.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tidal.models.{module}"), name)
