"""seedgrid: run and analyse seed grids (weight-initialisation × data-order seeds) of fine-tuning.

    import seedgrid
    ds = seedgrid.open_cube("runs/dodge2020-rte")     # also registers ds.seedgrid
"""

import os
from importlib import metadata

try:
    __version__ = metadata.version("seedgrid")  # one place for it: pyproject.toml
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# seedgrid never has two writers on one file (temporary name, then rename), so HDF5's file locks
# add nothing but failures on shared filesystems (NFS, Lustre: "unable to lock file"). Set
# before netCDF4 loads HDF5; a value the user set wins.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

from seedgrid.cube import open_cube  # noqa: E402  (registers the ds.seedgrid accessor)

__all__ = ["open_cube", "__version__"]
