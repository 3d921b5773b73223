"""seedgrid: run and analyse seed grids (weight-initialisation × data-order seeds) of fine-tuning."""

__version__ = "0.1.0"
