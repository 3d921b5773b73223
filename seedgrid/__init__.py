"""seedgrid: run and analyse seed grids (weight-initialisation × data-order seeds) of fine-tuning.

    import seedgrid
    ds = seedgrid.open_cube("runs/dodge2020-rte")     # also registers ds.seedgrid

Importing seedgrid registers the ``ds.seedgrid`` accessor and nothing else: ``open_cube`` and
``open_shards`` (netCDF4) load when first used, so the training modules (``seedgrid.engine``,
``seedgrid.stacked``, ``seedgrid.dropout``) import on a machine that has torch and
transformers but not netCDF4, cftime, tomli-w, submitit or datasets (a GPU node).
"""

from seedgrid.version import __version__

# Importing seedgrid changes nothing outside it: its side effects are in seedgrid.log, for its
# own processes only.
from seedgrid import accessor  # noqa: E402,F401  (registers ds.seedgrid)

__all__ = ["open_cube", "open_shards", "__version__"]


def __getattr__(name: str):
    if name in ("open_cube", "open_shards"):
        from seedgrid import cube

        return getattr(cube, name)
    raise AttributeError(f"module 'seedgrid' has no attribute {name!r}")
