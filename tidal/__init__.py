"""Tidal: elastic model serving on spot and on-demand capacity."""

__version__ = "0.1.0"
