"""seedgrid: run and analyse seed grids (weight-initialisation × data-order seeds) of fine-tuning.

    import seedgrid
    ds = seedgrid.open_cube("runs/dodge2020-rte")     # also registers ds.seedgrid
"""

from seedgrid.version import __version__

# Importing seedgrid changes nothing outside it: its side effects are in seedgrid.log, for its
# own processes only.
from seedgrid.cube import open_cube, open_shards  # noqa: E402  (registers ds.seedgrid)

__all__ = ["open_cube", "open_shards", "__version__"]
