"""The papers' tables from cubes, in their layout: ``python -m seedgrid.papers.dodge2020 RUN...``
and ``python -m seedgrid.papers.bui2025 RUN...`` (every number comes from seedgrid.analysis)."""
