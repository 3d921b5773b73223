"""seedgrid: run and analyse seed grids (weight-initialisation × data-order seeds) of fine-tuning.

    import seedgrid
    ds = seedgrid.open_cube("runs/dodge2020-rte")     # also registers ds.seedgrid
"""

__version__ = "0.1.0"

from seedgrid.cube import open_cube  # noqa: E402  (registers the ds.seedgrid accessor)

__all__ = ["open_cube", "__version__"]
