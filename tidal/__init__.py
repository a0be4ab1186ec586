"""Tidal: elastic model serving on spot and on-demand capacity."""


def __getattr__(name: str):
    # The version is written once, in pyproject.toml; tidal.about reads it when first asked, not at import.
    if name == "__version__":
        from tidal.about import version
        return version()
    raise AttributeError(f"module 'tidal' has no attribute {name!r}")
