"""ShadowMesh node agent."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("shadowmesh")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
