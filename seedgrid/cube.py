"""The cube: collect a run's shards into ``cube.nc``, and open it.

``collect`` streams shards, in the grid's order, into variables preallocated in a netCDF4 file
(chunked by WI seed row, at most 64 MB a chunk), so memory holds a shard and one chunk of each
variable at a time, not the cube; the file is written under a temporary name and renamed. Cells without a valid shard stay NaN with status ``missing`` — never dropped; a
truncated or unreadable shard is reported by cell (and treated as missing) rather than failing
the collect; a shard of another config refuses the whole collect. Collecting while the grid
still runs gives a partial cube; collecting again rewrites it from the shards.

``open_cube`` checks the schema (:mod:`seedgrid.store`) and returns a lazily loaded Dataset
with the ``ds.seedgrid`` accessor (:mod:`seedgrid.accessor`).
"""

from __future__ import annotations

import contextlib
import datetime
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr

from seedgrid import accessor  # noqa: F401  (registers ds.seedgrid)
from seedgrid.errors import UsageError
from seedgrid.progress import Ticker
from seedgrid.log import clean_text, logger
from seedgrid.rundir import CUBE, SHARDS, command, load_run_config, resubmit_command, shards_on_disk
from seedgrid.files import atomic_path, check_regular
from seedgrid.store import (CF_ATTRS, CONVENTIONS, PER_CELL_INT, PER_CELL_TEXT, SCHEMA_VERSION,
                            SEEDS, STATUS, VARIABLES, cell_attrs, decode, grid_attrs,
                            schema_problem, shard_problem, shard_state, status_flags, status_name,
                            version)




@dataclass
class Collected:
    path: Path
    counts: dict[str, int]
    #: (seed_wi, seed_do, shard path, why) of shards that could not be read
    damaged: list[tuple[int, int, Path, str]] = field(default_factory=list)

    def summary(self) -> str:
        """What ``collect`` prints: the counts, the metric at the end, the damaged shards."""
        c = self.counts
        lines = [f"wrote {self.path} ({self.path.stat().st_size / 1e6:.1f} MB): "
                 f"{sum(c.values())} cells — " + ", ".join(f"{s} {n}" for s, n in c.items() if n)]
        lines += [f"  damaged (wi={wi}, do={do}) {path}: {clean_text(why)}"
                  for wi, do, path, why in self.damaged]
        with open_cube(self.path) as ds:
            final, best = ds.seedgrid.final(), ds.seedgrid.final(best=True)
            if final.notnull().any():
                std = (f"{float(final.std(ddof=1)):.4f}" if final.count() > 1 else
                       "n/a (one cell)")
                lines.append(
                    f"  {ds.attrs['metric']} at the end: mean {float(final.mean()):.4f}, sample "
                    f"std {std}, min {float(final.min()):.4f}, max {float(final.max()):.4f} over "
                    f"{int(final.count())} cells; best so far: mean {float(best.mean()):.4f}, "
                    f"max {float(best.max()):.4f} (majority baseline "
                    f"{ds.seedgrid.majority_baseline():.4f})")
        if self.damaged:
            paths = shlex.join(["rm", *(str(p) for *_, p, _ in self.damaged)])
            lines.append(f"these cells count as missing; to train them again: {paths} && "
                         f"{resubmit_command(self.path.parent)}")
        return "\n".join(lines)


def collect(run_dir: str | Path, *, compress: bool = False) -> Collected:
    """Write ``run_dir/cube.nc`` from its shards; see the module docstring."""
    run_dir = Path(run_dir)
    cfg, found = _shards(run_dir, "collect")
    _check_writable(run_dir)
    _say_what_is_not_a_shard(run_dir, found)
    damaged, template = [], None
    width, common = _survey(found.values())
    for cell, path in sorted(found.items(), key=lambda item: item[1] not in common):
        try:  # the first readable shard of the most common layout fixes examples, steps, attrs
            template = _read_shard(path, cfg.hash, cell=cell)
            break
        except _Damaged as e:
            damaged.append((*cell, path, str(e)))
    if template is None:
        raise UsageError(f"no readable shard in {str(run_dir / 'shards')!r} ({damaged[0][3]}): "
                         "rerun the cells")
    # the config's grid, plus any cell trained outside it (nothing completed is dropped); an
    # unreadable shard outside the grid adds no row or column
    outside = {cell: path for cell, path in found.items()
               if cell[0] not in cfg.grid.seeds_wi or cell[1] not in cfg.grid.seeds_do}
    for cell, path in outside.items():
        if path != template["path"] and shard_state(path, cell) == "damaged":
            damaged.append((*cell, path, "unreadable"))
            del found[cell]
    seeds_wi, seeds_do = _grid_seeds(cfg, found)

    final = run_dir / CUBE
    counts = dict.fromkeys(STATUS, 0)
    with atomic_path(final) as tmp:
        with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
            variables = _create(nc, template, seeds_wi, seeds_do, cfg, compress, width)
            unreadable = {(wi, do) for wi, do, *_ in damaged}  # found before the writing
            ticker = Ticker("collect: shards read", len(found))
            # in the grid's order (by seeds, as numbers): each row's chunks fill in turn
            for k, (cell, path) in enumerate(sorted(found.items())):
                ticker.tick(k)
                if cell in unreadable:
                    continue
                try:
                    shard = template if path == template["path"] else _read_shard(
                        path, cfg.hash, template, cell)
                except _Damaged as e:
                    damaged.append((*cell, path, str(e)))
                    continue
                i, j = seeds_wi.index(cell[0]), seeds_do.index(cell[1])
                for name in ("logits", "train_loss", "wall_time_s"):
                    variables[name][i, j] = shard[name]
                variables["status"][i, j] = STATUS.index(shard["status"])
                for name, value in cell_attrs(shard["attrs"]).items():
                    variables[name][i, j] = value
                counts[shard["status"]] += 1
            if cfg.grid.coupled:
                counts["unused"] = _mark_unused(variables["status"], seeds_wi, seeds_do)
    counts["missing"] = len(seeds_wi) * len(seeds_do) - sum(counts.values())
    return Collected(final, counts, sorted(damaged, key=lambda d: d[:2]))


def _check_writable(run_dir: Path) -> None:
    """UsageError, before any work, where this user cannot write the run's cube (a teammate's
    run folder): say so and what to do, rather than fail at the end."""
    try:
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as e:
        raise UsageError(f"cannot write {str(run_dir / CUBE)!r} ({e.strerror}): collect a run "
                         "folder you can write to — a copy of this one (cp -r), or ask its "
                         "owner; open_shards reads the shards without writing") from None


def _mark_unused(status, seeds_wi: list[int], seeds_do: list[int]) -> int:
    """A coupled grid's cells off the diagonal, never trained: ``unused``, not missing."""
    codes = status[:]
    off = ~np.equal.outer(seeds_wi, seeds_do) & (codes == STATUS.index("missing"))
    status[:] = np.where(off, STATUS.index("unused"), codes)
    return int(off.sum())


def open_cube(path: str | Path, chunks: dict | str | None = None) -> xr.Dataset:
    """The cube at ``path`` (a cube file or a run folder), schema-checked, loaded lazily;
    with ``chunks``, its numeric variables backed by dask arrays (the per-cell text stays in
    numpy): ``"rows"`` one WI seed row a chunk (all its DO seeds, examples and evaluations: a
    625-cell MNLI cube in 25 chunks of 88 MB; what scales), ``"auto"`` dask's choice, ``{}``
    the file's own (a row, or as much of one as fits in 64 MB, a chunk), or a dict by
    dimension."""
    path = Path(path)
    if path.is_dir():
        path = path / CUBE
    if not path.is_file():
        raise UsageError(f"no cube at {str(path)!r}: run python -m seedgrid collect on the run "
                         "folder first")
    if isinstance(chunks, str) and chunks not in ("rows", "auto"):
        raise UsageError(f"chunks={chunks!r}: give 'rows', 'auto', {{}} or a dict by dimension")
    try:
        ds = xr.open_dataset(path, engine="netcdf4",
                             chunks=None if isinstance(chunks, str) else chunks)
        if isinstance(chunks, str):  # numbers only: dask cannot size text (object) arrays
            spec = {"seed_wi": 1} if chunks == "rows" else "auto"
            ds = ds.assign({name: var.chunk(spec if isinstance(spec, str) else
                                            {d: 1 for d in spec if d in var.dims})
                            for name, var in ds.data_vars.items() if var.dtype != object})
    except (OSError, ValueError) as e:
        raise UsageError(f"{str(path)!r} is not a readable netCDF4 file ({e}): give a cube "
                         "written by seedgrid collect") from None
    problem = schema_problem(ds)
    if not problem:
        try:
            return decode(ds)
        except ValueError as e:  # a status code outside its flags
            problem = str(e)
    ds.close()
    raise UsageError(f"{str(path)!r} is not a seedgrid cube: {problem}")


def open_shards(run_dir: str | Path, chunks: dict | str = "rows") -> xr.Dataset:
    """A run folder's shards as one lazy cube, without ``collect`` (e.g. to look at a grid
    whose every cell is trained before writing its cube): ``xr.open_mfdataset`` with the
    arguments a grid of shards needs, checked as :func:`open_cube` checks a cube. ``chunks``:
    ``"rows"`` (one WI seed row a chunk), or what ``open_mfdataset`` takes. The grid must be
    full (a shard for every cell of the config's grid, and of any seed trained outside it); the
    per-cell text (host, device, versions) stays in the shards' attributes: ``collect`` gathers
    it."""
    run_dir = Path(run_dir)
    cfg, found = _shards(run_dir, "open")
    seeds_wi, seeds_do = _grid_seeds(cfg, found)
    holes = len(seeds_wi) * len(seeds_do) - len(found)
    if holes:
        raise UsageError(f"the shards of {str(run_dir)!r} leave {holes} of {len(seeds_wi)} x "
                         f"{len(seeds_do)} cells empty: open_shards needs a full grid; "
                         f"{command('collect', run_dir)} writes a cube with them missing")
    for cell, path in found.items():
        _check_shard(path, cell, cfg.hash, run_dir)
    try:  # every argument given: xarray's defaults are changing (FutureWarnings), and
        # data_vars="minimal" keeps label (example,) one variable instead of one per shard
        ds = xr.open_mfdataset(
            list(found.values()), engine="netcdf4", combine="by_coords", data_vars="minimal",
            coords="minimal", compat="equals", join="exact", combine_attrs="drop_conflicts",
            chunks={"seed_wi": 1} if chunks == "rows" else chunks)
    except (OSError, ValueError) as e:  # unreadable, or shards of other examples or steps
        raise UsageError(f"the shards of {str(run_dir)!r} do not form one cube ({e}): "
                         f"{command('collect', run_dir)} names the ones that do not fit") from None
    problem = schema_problem(ds)
    if problem:
        ds.close()
        raise UsageError(f"the shards of {str(run_dir)!r} are not seedgrid shards: {problem}")
    return decode(ds)


def _shards(run_dir: Path, verb: str) -> tuple:
    """The run folder's frozen config and its shards by cell; UsageError when there are none."""
    cfg = load_run_config(run_dir)
    found = shards_on_disk(run_dir)
    if not found:
        raise UsageError(f"no shards in {str(run_dir / 'shards')!r}: nothing to {verb} yet "
                         f"({command('status', run_dir)})")
    return cfg, found


def _say_what_is_not_a_shard(run_dir: Path, found: dict) -> None:
    """One warning naming the files in shards/ that collect leaves out because their names are
    not a cell's (temporaries and damaged shards set aside are seedgrid's own, not named)."""
    used = {path.name for path in found.values()}
    with contextlib.suppress(OSError):
        others = sorted(p.name for p in (run_dir / SHARDS).iterdir() if p.name not in used
                        and not p.name.startswith(".") and ".damaged" not in p.name)
        if others:
            logger.warning(f"collect: left out {len(others)} file(s) of {run_dir / SHARDS} "
                           f"that are not shards (a shard is wiW_doD.nc): "
                           f"{clean_text(', '.join(others[:5]))}{' ...' if len(others) > 5 else ''}")


def _grid_seeds(cfg, found: dict) -> tuple[list[int], list[int]]:
    """The cube's seeds: the config's grid, plus any seed a shard was trained with outside it
    (nothing completed is dropped)."""
    return (sorted(set(cfg.grid.seeds_wi) | {wi for wi, _ in found}),
            sorted(set(cfg.grid.seeds_do) | {do for _, do in found}))


def _check_shard(path: Path, cell: tuple[int, int], config_hash: str, run_dir: Path) -> None:
    """UsageError unless ``path`` is a whole, readable shard of ``cell`` and of this config."""
    try:
        check_regular(path)
        with netCDF4.Dataset(path) as nc:
            problem = shard_problem(nc, cell) or (
                None if getattr(nc, "config_hash", None) == config_hash else
                f"it is of config {getattr(nc, 'config_hash', None)}, not this run's "
                f"{config_hash}")
    except (OSError, RuntimeError, KeyError, IndexError, ValueError, TypeError) as e:
        problem = f"unreadable ({e})"
    if problem:
        raise UsageError(f"shard {str(path)!r}: {problem}; {command('collect', run_dir)} "
                         "writes a cube without the shards that do not fit")


class _Damaged(Exception):
    pass


def _read_shard(path: Path, config_hash: str, template: dict | None = None,
                cell: tuple[int, int] | None = None) -> dict:
    """One shard's arrays and attributes; _Damaged if unreadable or not a whole shard of
    ``cell``, UsageError if foreign."""
    try:
        check_regular(path)
        with netCDF4.Dataset(path) as nc:
            problem = shard_problem(nc, cell)
            if problem:
                raise _Damaged(problem)
            nc.set_auto_mask(False)
            attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
            if attrs.get("config_hash") != config_hash:
                raise UsageError(f"shard {str(path)!r} is of config {attrs.get('config_hash')}, "
                                 f"not this run's {config_hash}: move it out of the run folder")
            shard = {"path": path, "attrs": attrs,
                     "logits": nc["logits"][0, 0], "train_loss": nc["train_loss"][0, 0],
                     "wall_time_s": float(nc["wall_time_s"][0, 0]),
                     "status": status_name(nc["status"][0, 0]), "label": nc["label"][:],
                     "label_flags": {k: nc["label"].getncattr(k) for k in nc["label"].ncattrs()
                                     if k.startswith("flag_")},
                     **{c: nc[c][:] for c in ("example", "step", "epoch", "class", "update")}}
    except UsageError:  # a shard of another config: the user's to move (a ValueError too)
        raise
    except (OSError, RuntimeError, KeyError, IndexError, TypeError, ValueError) as e:
        raise _Damaged(f"unreadable: {type(e).__name__}: {e}") from None
    if shard["status"] not in STATUS:
        raise _Damaged(f"unreadable: status {shard['status']!r}")
    if template is not None:
        for key in ("example", "step", "class", "update"):
            if not np.array_equal(shard[key], template[key]):
                raise _Damaged(f"its {key} coordinate differs from the other shards'")
        for key in ("data_train", "data_validation"):  # (shards before fingerprints: none)
            mine, theirs = attrs.get(key), template["attrs"].get(key)
            if mine and theirs and mine != theirs:
                raise UsageError(f"shard {str(path)!r} was trained on other {key[5:]} data than "
                                 f"{str(template['path'])!r} (fingerprint {mine}, not {theirs}): "
                                 "the data changed during the grid; move the shards of one "
                                 "data out of the run folder")
    return shard


def _create(nc, template: dict, seeds_wi: list[int], seeds_do: list[int], cfg,
            compress: bool, text_width: int) -> dict:
    """Dimensions, coordinates and empty (NaN / 'missing') variables of the cube."""
    sizes = {"seed_wi": len(seeds_wi), "seed_do": len(seeds_do),
             **{d: len(template[d]) for d in ("example", "step", "class", "update")}}
    for dim, n in sizes.items():
        nc.createDimension(dim, n)
    coords = {"seed_wi": np.array(seeds_wi), "seed_do": np.array(seeds_do),
              **{d: template[d] for d in ("example", "step", "class", "update")}}
    for name, values in coords.items():
        kind = str if values.dtype.kind in "OU" else values.dtype
        nc.createVariable(name, kind, (name,))[:] = values
    nc.createVariable("epoch", "f8", ("step",))[:] = template["epoch"]
    packing = {"zlib": True, "complevel": 1, "shuffle": True} if compress else {}
    out = {}
    for name, dims in VARIABLES.items():
        if name == "label":
            label = np.asarray(template["label"])  # float: a regression task's scores
            nc.createVariable(name, "f8" if label.dtype.kind == "f" else "i8", dims)[:] = label
            nc[name].setncatts(template["label_flags"])
        elif name == "status":
            out[name] = nc.createVariable(name, "i1", dims)
            out[name][:] = STATUS.index("missing")
            out[name].setncatts(status_flags())
        else:
            kind = "f8" if name == "wall_time_s" else "f4"
            chunks = _chunks(dims, sizes, 8 if kind == "f8" else 4)
            out[name] = nc.createVariable(name, kind, dims, fill_value=np.nan, chunksizes=chunks,
                                          **packing)
            # the cells come in the grid's order, so each chunk fills in turn and is written
            # once: HDF5 need not cache more than it
            out[name].set_var_chunk_cache(size=int(np.prod(chunks)) * (8 if kind == "f8" else 4)
                                          + 4096, nelems=7, preemption=1.0)
    nc.createDimension("text", text_width)  # the longest per-cell text: nothing is cut
    for name in PER_CELL_TEXT:  # char arrays (CF text): every reader takes them
        out[name] = nc.createVariable(name, "S1", (*SEEDS, "text"))
        out[name].setncattr("_Encoding", "utf-8")
    for name in PER_CELL_INT:
        out[name] = nc.createVariable(name, "i4", SEEDS, fill_value=-1)
    for name, cf in CF_ATTRS.items():
        nc[name].setncatts(cf)
    nc["logits"].setncattr("coordinates", "epoch")  # epoch: a coordinate along step
    attrs = grid_attrs(template["attrs"])
    attrs["coupled"] = int(cfg.grid.coupled)  # Bui's runs: cell (k, k) is run k
    attrs["Conventions"] = CONVENTIONS
    attrs["schema_version"] = SCHEMA_VERSION  # what this file is, whatever the shards were
    attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    attrs["grid"] = f"{len(seeds_wi)} x {len(seeds_do)} (config grid {len(cfg.grid.seeds_wi)} x " \
                    f"{len(cfg.grid.seeds_do)})"
    attrs["title"] = f"seedgrid cube: task {attrs.get('task', '?')}, model " \
                     f"{attrs.get('model', '?')}, {attrs['grid']}"
    attrs["history"] = f"{attrs['created']} seedgrid collect (seedgrid {version()})"
    nc.setncatts(attrs)
    return out


#: the most bytes of one chunk of the cube's variables (a row of cells, or part of one)
CHUNK_BYTES = 64 << 20


def _chunks(dims: tuple[str, ...], sizes: dict[str, int], itemsize: int) -> tuple[int, ...]:
    """On-disk chunks a reader uses as they are (``chunks={}``: dask's one task a chunk): one
    WI seed's row of cells a chunk — as many of its DO seeds as fit in CHUNK_BYTES — and the
    rest of each dimension whole."""
    cell = itemsize * int(np.prod([sizes[d] for d in dims if d not in SEEDS]))
    per_chunk = max(1, min(sizes["seed_do"], CHUNK_BYTES // max(cell, 1)))
    return tuple(1 if d == "seed_wi" else per_chunk if d == "seed_do" else sizes[d]
                 for d in dims)


def _survey(paths) -> tuple[int, set]:
    """One look at every shard at ``paths`` before any is read whole: the bytes of the longest
    per-cell text (host, device, gpu, ...: the cube's text dimension), and the shards of the
    most common layout (examples, steps, classes) — so that one odd shard, read first, is the
    one called damaged, not all the others. Unreadable and over-long shards count for neither."""
    longest = 1
    layouts: dict[tuple, set] = {}
    for path in paths:
        try:
            check_regular(path)
            with netCDF4.Dataset(path) as nc:
                if shard_problem(nc, None):
                    continue
                attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
                layout = tuple(np.asarray(nc[c][:]).tobytes() for c in ("example", "step", "class"))
        except (OSError, RuntimeError, KeyError, IndexError, ValueError, TypeError):
            continue
        texts = [v for k, v in cell_attrs(attrs).items() if k in PER_CELL_TEXT]
        longest = max([longest, *(len(str(t).encode("utf-8")) for t in texts)])
        layouts.setdefault(layout, set()).add(path)
    return longest, max(layouts.values(), key=len, default=set())
