"""Kept for run folders submitted before :mod:`seedgrid.grid`: their pickled tasks (in logs/)
name ``seedgrid.dispatch.ArrayTask``, and a requeued task unpickles it. Nothing else is here;
this module goes in the next release."""

from seedgrid.grid.worker import ArrayTask

__all__ = ["ArrayTask"]
