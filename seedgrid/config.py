"""Experiment configuration: a TOML file (or a packaged preset) becomes one frozen, validated Config.

Sections, in the order a TOML file gives them::

    [model]    what is fine-tuned            (part of the config hash)
    [task]     on which data, which subset   (part of the config hash)
    [train]    hyperparameters               (part of the config hash)
    [runtime]  how it is computed            (not hashed: it does not change what a cell is)
    [grid]     which seeds                   (not hashed: cells of one config merge across seeds)

The config hash identifies which cells may be merged into one cube: two cells with the same
hash differ only in their seeds. ``runtime`` settings (gradient accumulation, evaluation batch
size, deterministic kernels) are excluded because a cell means the same sequence of global
batches whatever they are (see :mod:`seedgrid.seeds`).

Presets live in ``seedgrid/presets/<name>.toml``; ``load_config("demo")`` reads one,
``load_config("my.toml")`` reads a file.
"""

from __future__ import annotations

import collections
import difflib
import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any


from seedgrid.errors import UsageError
from seedgrid.overrides import with_overrides
from seedgrid.tables import check_keys, table
from seedgrid.seeds import DROPOUT_SOURCES
from seedgrid.tasks import TaskConfig, get_task

if TYPE_CHECKING:
    from collections.abc import Sequence

MIXED_PRECISION = ("no", "bf16", "fp16")
DTYPES = ("float32", "bfloat16")
#: the largest seed: seeds are stored as int64 coordinates
MAX_SEED = 2**63 - 1
#: most seeds of one kind in a grid (Dodge et al.: 25); a grid holds at most MAX_CELLS cells
MAX_SEEDS = 10_000
MAX_CELLS = 1_000_000
#: the engine this seedgrid trains cells by (TrainConfig.engine)
ENGINE = 3
#: what each engine drew a cell's dropout masks from: the engines before ENGINE are read in
#: run folders (collect, report, compare) but never trained
ENGINES = {1: "dropout drawn per process",
           2: "masks drawn from a generator per cell and site",
           3: "masks a counter-based function of the cell's seeds, computed on the device"}


@dataclass(frozen=True)
class ModelConfig:
    #: HF hub id or local folder; offline: "embedded:minilm" (packaged MiniLM-L6) or
    #: "tiny-random-bert" (a 2-layer random BERT built in-process, for tests).
    name: str
    max_length: int = 128
    #: std of the freshly initialised head; 0 means the model config's own (0.02 for BERT).
    initializer_range: float = 0.0
    #: the weights' dtype: "float32", or "bfloat16" (half the memory: a 3B decoder on a GPU;
    #: LoRA adapters stay float32, as peft keeps them)
    dtype: str = "float32"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 16
    learning_rate: float = 2e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    dropout: float = 0.1
    #: evaluations per epoch, plus one before training
    evals_per_epoch: int = 10
    #: what a cell's dropout masks follow: "seed_do", "seed_wi" or "fixed"
    dropout_seed: str = "seed_do"
    mixed_precision: str = "no"
    #: what a cell computes from its seeds, by seedgrid version (ENGINES): 3 (masks a
    #: counter-based function of the cell's seeds, the update and the example's place in its
    #: global batch: seedgrid.dropout) is what this seedgrid trains; 1 and 2 are read in run
    #: folders frozen before it, never trained
    engine: int = 3


@dataclass(frozen=True)
class LoraConfig:
    """LoRA (peft) instead of full fine-tuning, when ``rank`` > 0: only the adapters and the
    classification head train. Hashed with the model (it changes what a cell is)."""
    rank: int = 0
    alpha: int = 16
    dropout: float = 0.0
    #: the modules to adapt (peft's target_modules), e.g. ["q_proj", "v_proj"] for Llama
    target_modules: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RuntimeConfig:
    #: micro-batches per global batch (per process); does not change the global batches
    gradient_accumulation: int = 1
    eval_batch_size: int = 64
    #: torch deterministic algorithms: the same cell on the same hardware reproduces bitwise
    deterministic: bool = False
    #: also checkpoint after every N-th evaluation (0: only when SLURM signals preemption or
    #: the time limit); a crash or plain requeue then loses at most N evaluations of work
    checkpoint_every_evals: int = 0
    #: recompute activations in the backward pass (less memory, ~30% more time; same numbers)
    gradient_checkpointing: bool = False
    #: torch.compile the forward and loss of a one-process cell or pack as one graph
    #: (fullgraph); off by default on a GPU and a CPU alike (docs/packs.md says why)
    compile: bool = False


@dataclass(frozen=True)
class OutputConfig:
    """What a run keeps besides its shards (not hashed: it changes no cell)."""
    #: the final weights of the best N cells by the task's metric at the last evaluation, as
    #: save_pretrained folders in <run>/weights/ (0: none; "all" in the TOML, -1 here: every
    #: cell's)
    keep_weights: int = 0


@dataclass(frozen=True)
class GridConfig:
    #: empty when the config gives no [grid]: ``submit --array N*N`` then means seeds 1..N x 1..N
    seeds_wi: tuple[int, ...] = ()
    seeds_do: tuple[int, ...] = ()
    #: Bui et al.'s runs: run k uses seed k for everything, the cells (k, k) only
    coupled: bool = False

    def cells(self) -> list[tuple[int, int]]:
        """Every cell (seed_wi, seed_do), WI-major (row by row of the WI × DO map); of a
        coupled grid, the diagonal."""
        if self.coupled:
            return [(k, k) for k in self.seeds_wi]
        return [(wi, do) for wi in self.seeds_wi for do in self.seeds_do]


@dataclass(frozen=True)
class Config:
    model: ModelConfig
    task: TaskConfig
    train: TrainConfig = TrainConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    grid: GridConfig = GridConfig()
    lora: LoraConfig = LoraConfig()
    output: OutputConfig = OutputConfig()
    #: where the config came from (a preset name or a path); not hashed
    source: str = ""

    @property
    def hash(self) -> str:
        """12 hex digits over model, task, train (and lora, when on): equal hashes may be merged
        into one cube."""
        semantic = {k: dataclasses.asdict(getattr(self, k)) for k in self.hashed_sections()}
        semantic["task"] = self.task.as_dict()  # (a task of your own's keys: where set)
        if self.model.dtype == "float32":  # added later: hashed only when set, as [lora]
            del semantic["model"]["dtype"]
        if self.train.engine == 1:  # the cells before engine 2 keep their hashes
            del semantic["train"]["engine"]
        text = json.dumps(semantic, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def hashed_sections(self) -> tuple[str, ...]:
        """What a cell is: [model], [task], [train], and [lora] when LoRA is on (without it the
        hashes of full fine-tuning configs are what they always were)."""
        return ("model", "task", "train") + (("lora",) if self.lora.rank else ())

    def to_dict(self) -> dict[str, Any]:
        d = {k: dataclasses.asdict(getattr(self, k)) for k in ("model", "train", "runtime")}
        d = {"model": d["model"], "task": self.task.as_dict(), **d}
        if self.lora.rank:
            d["lora"] = dataclasses.asdict(self.lora)
        if self.output != OutputConfig():
            kept = self.output.keep_weights
            d["output"] = {"keep_weights": "all" if kept == -1 else kept}
        if self.grid.seeds_wi:
            d["grid"] = {"seeds_wi": list(self.grid.seeds_wi),
                         "seeds_do": list(self.grid.seeds_do)}
            if self.grid.coupled:
                d["grid"]["coupled"] = True
        return d

    def to_toml(self) -> str:
        header = f"# seedgrid config (hash {self.hash}), frozen from {self.source or 'a dict'}\n"
        import tomli_w  # (only where a config is written: not on a node that only trains)

        return header + tomli_w.dumps(self.to_dict())


def read_text(path: Path, what: str) -> str:
    """A text file the user gave; UsageError when it cannot be read as UTF-8 text."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{what} file {str(path)!r} cannot be read ({type(e).__name__}: "
                         f"{str(e)[:80]}): give a UTF-8 TOML file") from None


def preset_names() -> list[str]:
    folder = resources.files("seedgrid") / "presets"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def preset_text(name: str) -> str:
    """A preset's TOML as shipped (its header says what each value is and whose)."""
    if name not in preset_names():
        close = difflib.get_close_matches(name, preset_names(), n=1)
        raise UsageError(f"unknown preset {name!r}: "
                         + (f"did you mean {close[0]!r}? " if close else "")
                         + f"choose one of {', '.join(preset_names())}")
    return (resources.files("seedgrid") / "presets" / f"{name}.toml").read_text()


def presets_table() -> str:
    """What ``seedgrid presets`` prints: each preset's model, task, grid and hash; the tasks."""
    lines, names = [], preset_names()
    width = max(len(n) for n in names)
    for name in names:
        cfg = load_config(name)
        g = cfg.grid
        grid = (f"{len(g.cells())} coupled runs" if g.coupled else
                f"{len(g.seeds_wi)}x{len(g.seeds_do)} seeds") if g.seeds_wi else "no grid"
        lines.append(f"{name:{width}s} {cfg.model.name:24s} task {cfg.task.name:13s} {grid}, "
                     f"{cfg.train.epochs} epoch(s), "
                     f"{'LoRA r' + str(cfg.lora.rank) + ', ' if cfg.lora.rank else ''}"
                     f"hash {cfg.hash}")
    from seedgrid.tasks import TASKS

    return "\n".join(lines) + "\n\ntasks: " + ", ".join(f"{t.name} ({t.metric})"
                                                       for t in TASKS.values())


def load_config(spec: str | Path | Config, frozen: bool = False,
                overrides: Sequence[str] = ()) -> Config:
    """A Config from a preset name (``demo``) or a TOML file path, with ``overrides``
    (``--set section.key=value``, :func:`with_overrides`) applied; ``frozen``: a run folder's
    config.toml, where no ``[train] engine`` means engine 1 (frozen before engines were
    named). A Config is returned as it is (a command that already read one)."""
    if isinstance(spec, Config):
        return spec
    spec = str(spec)
    path = Path(spec)
    if path.is_file():
        text = read_text(path, "config")
    elif spec in preset_names():
        text = (resources.files("seedgrid") / "presets" / f"{spec}.toml").read_text()
    elif spec.endswith(".toml") or "/" in spec:
        raise UsageError(f"config file {spec!r} not found: give an existing TOML file or a preset "
                         f"({', '.join(preset_names())})")
    else:
        raise UsageError(f"unknown preset {spec!r}: choose one of {', '.join(preset_names())}, "
                         "or give a path to a TOML file")
    try:
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"config {spec!r} is not valid TOML ({e}): fix the file") from None
    if frozen and isinstance(raw.get("train", {}), dict):
        raw.setdefault("train", {}).setdefault("engine", 1)
    return config_from_dict(with_overrides(raw, overrides, _SECTIONS), source=spec)


def config_from_toml(text: str, frozen: bool = True) -> Config:
    """A Config from TOML text (a shard's ``config`` attribute): frozen, as a run folder's."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"not a config ({e})") from None
    if frozen and isinstance(raw.get("train", {}), dict):
        raw.setdefault("train", {}).setdefault("engine", 1)
    return config_from_dict(raw)


def check_trainable(cfg: Config, where: str) -> None:
    """UsageError unless this seedgrid can train more cells of ``cfg`` (its engine)."""
    if cfg.train.engine != ENGINE:
        raise UsageError(f"{where}: its cells were trained by seedgrid's engine "
                         f"{cfg.train.engine} ({ENGINES[cfg.train.engine]}), and this seedgrid "
                         f"trains engine {ENGINE} only (other masks for the same seeds): cells "
                         "of the two cannot share a cube; start a new run folder (--out)")


#: the config's sections of settings ([grid] is read on its own)
_SECTIONS = {"model": ModelConfig, "task": TaskConfig, "train": TrainConfig,
             "runtime": RuntimeConfig, "lora": LoraConfig, "output": OutputConfig}


def config_from_dict(raw: dict[str, Any], source: str = "") -> Config:
    """Validate a nested dict (as read from TOML) into a Config; one UsageError per bad value."""
    sections: dict[str, Any] = {**_SECTIONS, "grid": None}
    check_keys("config", raw, sections)
    for required in ("model", "task"):
        if required not in raw:
            raise UsageError(f"config has no [{required}] section: add one (see the presets in "
                             "seedgrid/presets/)")
    output = raw.get("output")
    if isinstance(output, dict) and output.get("keep_weights") == "all":
        raw = {**raw, "output": {**output, "keep_weights": -1}}
    parts = {name: _section(name, cls, raw.get(name, {}))
             for name, cls in sections.items() if cls is not None}
    cfg = Config(**parts, grid=_grid(raw.get("grid", {})), source=source)
    _validate(cfg)
    return cfg


def with_seeds(cfg: Config, seeds_wi: list[int], seeds_do: list[int]) -> Config:
    """The same config with another grid (validated like one read from a file)."""
    raw = cfg.to_dict()
    raw["grid"] = {"seeds_wi": list(seeds_wi), "seeds_do": list(seeds_do),
                   "coupled": cfg.grid.coupled}
    return config_from_dict(raw, source=cfg.source)


def with_train_size(cfg: Config, train_size: int) -> Config:
    """The same config with another [task] train_size (validated like one read from a file)."""
    raw = cfg.to_dict()
    raw["task"]["train_size"] = train_size
    return config_from_dict(raw, source=cfg.source)


def _section(name: str, cls, raw: dict[str, Any], where: str | None = None):
    return table(cls, raw, where or f"[{name}]")


def _grid(raw: dict[str, Any]) -> GridConfig:
    check_keys("[grid]", raw, ("seeds_wi", "seeds_do", "n_wi", "n_do", "coupled"))
    seeds = {}
    for kind in ("wi", "do"):
        explicit, n = raw.get(f"seeds_{kind}"), raw.get(f"n_{kind}")
        if explicit is not None and n is not None:
            raise UsageError(f"[grid] has both seeds_{kind} and n_{kind}: keep one")
        if n is not None:
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_SEEDS:
                raise UsageError(f"[grid] n_{kind} = {n!r} must be an integer from 1 to "
                                 f"{MAX_SEEDS} (seeds 1..n_{kind})")
            explicit = list(range(1, n + 1))
        seeds[kind] = tuple(check_seeds(f"seed_{kind}", explicit)) if explicit is not None else ()
    if len(seeds["wi"]) * len(seeds["do"]) > MAX_CELLS:
        raise UsageError(f"[grid] of {len(seeds['wi'])} x {len(seeds['do'])} cells is more than "
                         f"{MAX_CELLS:,}: split it into several runs")
    if bool(seeds["wi"]) != bool(seeds["do"]):
        given, missing = ("wi", "do") if seeds["wi"] else ("do", "wi")
        raise UsageError(f"[grid] gives seed_{given} but not seed_{missing}: give both "
                         f"(seeds_{missing} = [...] or n_{missing} = N)")
    coupled = raw.get("coupled", False)
    if not isinstance(coupled, bool):
        raise UsageError(f"[grid] coupled = {coupled!r} should be true or false")
    if coupled and seeds["wi"] != seeds["do"]:
        raise UsageError(f"[grid] coupled = true runs seed k for everything (the cells (k, k)), "
                         f"but it gives {len(seeds['wi'])} WI and {len(seeds['do'])} DO seeds"
                         f"{'' if len(seeds['wi']) != len(seeds['do']) else ' that differ'}: "
                         "give the same seeds to both (n_wi = n_do = N)")
    return GridConfig(seeds_wi=seeds["wi"], seeds_do=seeds["do"], coupled=coupled)


def check_seeds(name: str, seeds) -> list[int]:
    """Seeds are distinct non-negative integers; anything else is a UsageError naming the value."""
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise UsageError(f"{name} seeds {str(seeds)[:80]!r} must be a non-empty list of integers")
    if len(seeds) > MAX_SEEDS:
        raise UsageError(f"{name}: {len(seeds)} seeds is more than {MAX_SEEDS}: split the grid "
                         "into several runs")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s <= MAX_SEED:
            raise UsageError(f"{name} = {s!r} is not an integer from 0 to 2**63 - 1: use seeds "
                             "0, 1, 2, ...")
    dup = sorted(s for s, n in collections.Counter(seeds).items() if n > 1)
    if dup:
        raise UsageError(f"{name} {dup[0]} is given twice: each seed once")
    return list(seeds)


def _validate(cfg: Config) -> None:
    t, r, m = cfg.train, cfg.runtime, cfg.model
    checks = [
        (1 <= t.epochs <= 1000, f"[train] epochs = {t.epochs} must be from 1 to 1000"),
        (1 <= t.batch_size <= 1_000_000, f"[train] batch_size = {t.batch_size} must be from 1 "
                                         "to 1000000"),
        (t.learning_rate > 0, f"[train] learning_rate = {t.learning_rate} must be positive"),
        (0 <= t.warmup_ratio < 1, f"[train] warmup_ratio = {t.warmup_ratio} must be in [0, 1)"),
        (0 <= t.dropout < 1, f"[train] dropout = {t.dropout} must be in [0, 1)"),
        (t.weight_decay >= 0, f"[train] weight_decay = {t.weight_decay} must be >= 0"),
        (t.max_grad_norm >= 0, f"[train] max_grad_norm = {t.max_grad_norm} must be >= 0 "
                               "(0 turns clipping off)"),
        (1 <= t.evals_per_epoch <= 10_000, f"[train] evals_per_epoch = {t.evals_per_epoch} must "
                                           "be from 1 to 10000 (Dodge et al.: 10)"),
        (t.dropout_seed in DROPOUT_SOURCES, f"[train] dropout_seed = {t.dropout_seed!r} must be "
                                            f"one of {', '.join(DROPOUT_SOURCES)}"),
        (t.engine in ENGINES, f"[train] engine = {t.engine} must be {ENGINE} (1 and 2: read "
                              f"only, in run folders frozen before engine {ENGINE})"),
        (t.mixed_precision in MIXED_PRECISION, f"[train] mixed_precision = {t.mixed_precision!r} "
                                               f"must be one of {', '.join(MIXED_PRECISION)}"),
        (1 <= r.gradient_accumulation <= t.batch_size, f"[runtime] gradient_accumulation = "
                                                       f"{r.gradient_accumulation} must be from 1 "
                                                       f"to the batch size ({t.batch_size})"),
        (1 <= r.eval_batch_size <= 1_000_000, f"[runtime] eval_batch_size = {r.eval_batch_size} "
                                              "must be from 1 to 1000000"),
        (r.checkpoint_every_evals >= 0, f"[runtime] checkpoint_every_evals = "
                                        f"{r.checkpoint_every_evals} must be >= 0 (0 = on signal only)"),
        (m.max_length >= 8, f"[model] max_length = {m.max_length} must be at least 8"),
        (m.initializer_range >= 0, f"[model] initializer_range = {m.initializer_range} must be "
                                   ">= 0 (0 = the model's own)"),
        (m.max_length <= 100_000, f"[model] max_length = {m.max_length} must be at most 100000"),
        (m.dtype in DTYPES, f"[model] dtype = {m.dtype!r} must be one of {', '.join(DTYPES)}"),
        (cfg.task.train_size >= 0 and cfg.task.validation_size >= 0,
         "[task] train_size and validation_size must be >= 0 (0 = the whole split)"),
        (cfg.output.keep_weights >= -1, f"[output] keep_weights = {cfg.output.keep_weights} must "
                                         "be 0 (none), a number of cells, or \"all\""),
        (0 <= cfg.lora.rank <= 4096, f"[lora] rank = {cfg.lora.rank} must be from 0 (off) to 4096"),
        (cfg.lora.alpha > 0, f"[lora] alpha = {cfg.lora.alpha} must be positive"),
        (0 <= cfg.lora.dropout < 1, f"[lora] dropout = {cfg.lora.dropout} must be in [0, 1)"),
        (not cfg.lora.rank or cfg.lora.target_modules, "[lora] rank > 0 needs target_modules: "
         "the modules to adapt, e.g. [\"q_proj\", \"v_proj\"] (Llama) or [\"query\", \"value\"] (BERT)"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    bad = sorted(set(cfg.task.data_files) - {"train", "validation"})
    if bad:
        raise UsageError(f"[task] data_files key {bad[0]!r}: use 'train' and 'validation'")
    get_task(cfg.task)  # a shipped task's name, or a task of your own described whole
