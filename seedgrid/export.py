"""``export``: a cube's per-cell table — one row per cell and evaluation (seed_wi, seed_do,
update, then the metric and the loss) — as a file others read: CSV, compressed CSV, Parquet or
JSON, chosen by how the file's name ends; ``-`` is CSV on stdout, for a pipe."""

from __future__ import annotations

import sys
from pathlib import Path

from seedgrid.errors import UsageError

#: export's formats, by how the file's name ends
EXPORTS = {".csv": lambda t, f: t.to_csv(f, index=False),
           ".csv.gz": lambda t, f: t.to_csv(f, index=False, compression="gzip"),
           ".parquet": lambda t, f: t.to_parquet(f, index=False),
           ".json": lambda t, f: t.to_json(f, orient="records", indent=1)}


def export(cube: str | Path, to: str, metric: str | None = None) -> None:
    """Write the per-cell table of ``cube`` (a cube file or a run folder) to ``to``
    atomically (a link there stays, and the file it points to is rewritten)."""
    import seedgrid
    from seedgrid.files import atomic_path
    from seedgrid.rundir import check_output

    out = Path(to)
    kind = next((k for k in sorted(EXPORTS, key=len, reverse=True) if out.name.endswith(k)),
                None)
    if to != "-" and kind is None:
        raise UsageError(f"--to {to!r}: give a file name ending in "
                         f"{', '.join(EXPORTS)}, or - (CSV on stdout)")
    if to != "-":
        check_output(out, "--to")
    with seedgrid.open_cube(cube) as ds:
        table = ds.seedgrid.table(metric)
    if to == "-":  # for a pipe: the CSV alone on stdout
        table.to_csv(sys.stdout, index=False)
        return
    with atomic_path(out, through_link=True) as tmp:
        EXPORTS[str(kind)](table, tmp)
    print(f"wrote {out}: {len(table)} rows (seed_wi, seed_do, update) x {list(table.columns[3:])}")
