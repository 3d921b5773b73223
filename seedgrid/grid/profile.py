"""Cluster profiles: where and how a grid's array tasks run (``cluster/<name>.toml``).

A profile is a TOML file of :class:`Profile` fields. ``--cluster NAME`` reads ``NAME`` as a
file path, else ``cluster/NAME.toml`` in the current folder (a site's own profiles), else
the profiles installed with seedgrid (the repository's ``cluster/``, in the wheel as
``seedgrid/profiles/``: ``local`` and the template ``example-gpu``; the tests' own, for the
SLURM that ``slurm/`` starts, is ``slurm/dev.toml``); ``local`` needs no file.

``executor`` names the backend that runs the tasks: ``"local"`` (:mod:`seedgrid.grid.local`,
subprocesses of this machine) or ``"slurm"`` (:mod:`seedgrid.grid.slurm`, one array per
submission). A profile is data only: what each backend makes of it is the backend's.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from seedgrid.config import read_text
from seedgrid.tables import table
from seedgrid.errors import UsageError
from seedgrid.overrides import with_overrides

if TYPE_CHECKING:
    from collections.abc import Sequence

EXECUTORS = ("local", "slurm")
#: how a pack of cells trains (Profile.pack_as)
PACK_AS = ("stacked", "processes")
#: profile fields passed to sbatch as they are (as --account=..., --qos=...)
SBATCH_FIELDS = ("account", "qos", "constraint", "reservation", "exclude")
#: sbatch options seedgrid sets from the profile's fields (or itself): not in ``sbatch``
SBATCH_OWN = {"time": "time_min", "mem": "mem_gb", "cpus_per_task": "cpus_per_task",
              "partition": "partition", "gpus_per_node": "gpus_per_cell",
              "ntasks_per_node": "processes_per_cell", "job_name": "(the run folder's name)",
              "array": "(--array, --parallel)", "output": "(the run folder's logs/)",
              "error": "(the run folder's logs/)", "signal": "(seedgrid's preemption signal)",
              **{k: k for k in SBATCH_FIELDS}}
#: the profiles installed with the package: the repository's top-level cluster/, built into the
#: wheel as seedgrid/profiles/ (in a checkout, seedgrid/profiles is a link to it)
PACKAGED = Path(__file__).resolve().parent.parent / "profiles"


@dataclass(frozen=True)
class Profile:
    name: str = "local"
    executor: str = "local"
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    reservation: str = ""
    #: nodes the tasks must not run on (sbatch --exclude)
    exclude: str = ""
    #: any other sbatch option, by its long name (``gres = "gpu:a100:1"``, ``mail_type =
    #: "FAIL"``); ``slurm_additional_parameters``, submitit's name, is read as this
    sbatch: dict[str, str] = dataclasses.field(default_factory=dict)
    #: GPUs for each array task (one cell trains on all of them with DDP)
    gpus_per_cell: int = 0
    #: processes for each cell (0: one per GPU, at least 1); on CPU, >1 trains with gloo
    processes_per_cell: int = 0
    #: cells each array task trains at once (a pack); submit --pack overrides it
    cells_per_gpu: int = 1
    #: how a pack trains: "stacked" (one stacked model in one process: seedgrid.stacked; on a
    #: GPU or a CPU) or "processes" (a process per cell on the task's GPU: for model families
    #: the engine does not know)
    pack_as: str = "stacked"
    #: memory of each GPU in GB (0: unknown; the pack's estimate is then checked on the node)
    gpu_mem_gb: float = 0.0
    cpus_per_task: int = 2
    mem_gb: float = 4.0
    #: wall-time limit of one array task, in minutes
    time_min: int = 60
    #: most array tasks running at once (the array's %K); --parallel overrides it
    array_parallelism: int = 64
    #: most tasks in one sbatch array (0: ask the cluster: scontrol's MaxArraySize); bigger
    #: submissions are split into several arrays
    max_array_size: int = 0
    #: shell lines run before each task (module loads, environment variables)
    setup: list[str] = dataclasses.field(default_factory=list)


def search_path() -> list[Path]:
    """Where ``--cluster NAME`` looks: ``./cluster/``, then the installed profiles (once, in a
    checkout whose ``cluster/`` they are)."""
    here = Path.cwd() / "cluster"
    if here.is_dir() and PACKAGED.is_dir() and here.samefile(PACKAGED):
        return [PACKAGED]
    return [here, PACKAGED]


def load_profile(spec: str, overrides: Sequence[str] = ()) -> Profile:
    """The profile ``--cluster`` names (a name or a TOML file), with ``overrides``
    (``--set cluster.KEY=VALUE``: ``KEY=VALUE``, read as TOML) applied for this submission —
    all of it validated as one profile file is."""
    path: Path | None = Path(spec)
    if not Path(spec).is_file():
        path = next((d / f"{spec}.toml" for d in search_path() if (d / f"{spec}.toml").is_file()),
                    None)
    if path is None and spec != "local":
        known = sorted({p.stem for d in search_path() if d.is_dir() for p in d.glob("*.toml")})
        raise UsageError(f"unknown cluster profile {spec!r}: choose one of "
                         f"{', '.join(known) or 'local'} or give a TOML file")
    raw: dict = {}
    if path is not None:
        try:
            raw = tomllib.loads(read_text(path, "cluster profile"))
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"cluster profile {str(path)!r} is not valid TOML ({e})") from None
    if overrides:
        raw = with_overrides({"cluster": raw}, [f"cluster.{o}" for o in overrides],
                             {"cluster": Profile})["cluster"]
    where = (f"cluster profile {str(path)!r}" if path is not None else "cluster profile 'local'") \
        + (" with --set cluster." + ", cluster.".join(overrides) if overrides else "")
    if path is None and not overrides:
        return Profile()
    if "name" in raw:
        raise UsageError(f"{where}: unknown key 'name' (the profile is named after its file)")
    if "slurm_additional_parameters" in raw:  # submitit's name for the same table
        if "sbatch" in raw:
            raise UsageError(f"{where}: give sbatch or slurm_additional_parameters, not both")
        raw["sbatch"] = raw.pop("slurm_additional_parameters")
    if isinstance(raw.get("sbatch"), dict):
        _check_sbatch(raw["sbatch"], where)
    # a profile given as a file is named by that file (resolved), so that what jobs.json
    # records and the hints repeat finds the same file again; one found by its name, by it
    name = str(Path(spec).resolve()) if Path(spec).is_file() else \
        (path.stem if path is not None else "local")
    profile = table(Profile, {**raw, "name": name}, where)
    checks = [
        (profile.executor in EXECUTORS, f"executor = {profile.executor!r} must be one of "
                                        f"{', '.join(EXECUTORS)}"),
        (0 <= profile.gpus_per_cell <= 64, f"gpus_per_cell = {profile.gpus_per_cell} must be "
                                           "from 0 to 64"),
        (0 <= profile.processes_per_cell <= 64, f"processes_per_cell = "
                                                f"{profile.processes_per_cell} must be from 0 to 64"),
        (1 <= profile.cells_per_gpu <= 64, f"cells_per_gpu = {profile.cells_per_gpu} must be "
                                           "from 1 to 64"),
        (profile.pack_as in PACK_AS, f"pack_as = {profile.pack_as!r} must be one of "
                                     f"{', '.join(PACK_AS)}"),
        (0 <= profile.gpu_mem_gb <= 100_000, f"gpu_mem_gb = {profile.gpu_mem_gb} must be from "
                                             "0 (unknown) to 100000"),
        (1 <= profile.cpus_per_task <= 4096, f"cpus_per_task = {profile.cpus_per_task} must be "
                                             "from 1 to 4096"),
        (0 < profile.mem_gb <= 100_000, f"mem_gb = {profile.mem_gb} must be above 0 (GB)"),
        (1 <= profile.time_min <= 10**6, f"time_min = {profile.time_min} must be from 1 to "
                                         "1000000 (minutes)"),
        (profile.array_parallelism >= 1, f"array_parallelism = {profile.array_parallelism} must "
                                         "be at least 1"),
        (profile.max_array_size >= 0, f"max_array_size = {profile.max_array_size} must be >= 0 "
                                      "(0: ask the cluster)"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(f"{where}: {message}")
    return profile


#: an sbatch option as a profile names it: its long name, with - or _ between words
_OPTION = re.compile(r"[a-z][a-z0-9]+(?:[-_][a-z0-9]+)*")


def _check_sbatch(options: dict, where: str) -> None:
    """The rule for a profile's ``sbatch`` table (each entry becomes one ``#SBATCH --key=value``
    line of the job script): keys are long option names, values one line of printable text,
    and no spelling of an option seedgrid sets itself (``--time``, ``job-name``, ``Job_Name``)
    gets past: sbatch reads ``_`` and ``-`` alike and a later line would win over seedgrid's."""
    for key, value in options.items():
        said = str(key).strip().lstrip("-").lower().replace("-", "_")
        if said in SBATCH_OWN:
            raise UsageError(f"{where}: sbatch option {key!r} is seedgrid's to set: use the "
                             f"profile's {SBATCH_OWN[said]} instead")
        if not _OPTION.fullmatch(str(key)):
            raise UsageError(f"{where}: sbatch option {key!r} is not an option name: give "
                             "sbatch's long name without dashes (gres, mail_type, comment)")
        if isinstance(value, str) and (not value.isprintable() or len(value) > 1000):
            raise UsageError(f"{where}: sbatch option {key} = {value[:60]!r} must be one line "
                             "of printable text (at most 1000 characters)")


def profiles() -> list[tuple[str, Path | None, str]]:
    """Every profile ``--cluster NAME`` finds, in the order it looks: (name, file, what), the
    file None for the built-in ``local``; a name found twice is the first's (the second is
    listed as hidden)."""
    found: list[tuple[str, Path | None, str]] = []
    seen: set[str] = set()
    for folder in search_path():
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            found.append((path.stem, path, "hidden by the one above" if path.stem in seen
                          else "yours" if folder != PACKAGED else "installed with seedgrid"))
            seen.add(path.stem)
    if "local" not in seen:
        found.append(("local", None, "built in: this machine, no SLURM"))
    return found
