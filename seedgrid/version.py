"""seedgrid's version: the installed package's (pyproject.toml is the one place it is set).
A module of its own, so that what records it (shards, cubes, --version) imports nothing else."""

from importlib import metadata

try:
    __version__ = metadata.version("seedgrid")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
