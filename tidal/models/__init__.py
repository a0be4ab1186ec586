"""Versioned models from a repository, their runtimes, and dynamic batching."""

from tidal.models.config import BatchingOptions, ModelConfig, RuntimeOptions, VersionPolicy
from tidal.models.lifecycle import VersionState, VersionStatus
from tidal.models.manager import ModelManager
from tidal.models.servable import Servable
from tidal.models.signatures import (
    CLASSIFY, CLASSIFY_SIGNATURE, DEFAULT_SIGNATURE, PREDICT, REGRESS, REGRESS_SIGNATURE, Signature, TensorSpec,
)

__all__ = [
    "BatchingOptions", "ModelConfig", "RuntimeOptions", "VersionPolicy", "VersionState", "VersionStatus",
    "ModelManager", "Servable", "Signature", "TensorSpec", "PREDICT", "CLASSIFY", "REGRESS",
    "DEFAULT_SIGNATURE", "CLASSIFY_SIGNATURE", "REGRESS_SIGNATURE",
]
