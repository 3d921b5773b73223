"""Command line: ``python -m seedgrid <command> --help``.

Bad input (a UsageError) prints one line, ``seedgrid: error: ...``, and exits with status 2.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import textwrap
import traceback
from pathlib import Path

from seedgrid.argtypes import integer, number
from seedgrid.errors import Interrupted, UsageError
from seedgrid.grid.cli import GRID_COMMANDS
from seedgrid.log import logger


METRIC_HELP = ("a metric other than the task's: accuracy, f1, mcc, acc_f1, macro_f1, em "
               "(classification; em: MultiRC's questions) or pearson, spearman (regression: "
               "STS-B)")


class _Parser(argparse.ArgumentParser):
    """argparse, but bad input is one line: ``seedgrid: error: ...``, exit status 2."""

    def error(self, message: str):
        # "argument --alpha: 5 is not ..." -> "--alpha 5 is not ...": the option, then its value
        message = re.sub(r"^argument ([^:]+): ", r"\1 ", message)
        print(f"seedgrid: error: {message} (see: {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def json_out(where: str, result) -> None:
    """``--json [FILE]``: the JSON alone on stdout ('-', or the flag alone), else to FILE."""
    from seedgrid.files import json_ready, write_json_atomic

    if where == "-":
        import json

        print(json.dumps(json_ready(result), indent=1, allow_nan=False))
    else:
        write_json_atomic(where, result, through_link=True)  # (a link stays a link)
        logger.info(f"wrote {where}")


def _collect(args: argparse.Namespace) -> None:
    from seedgrid.cube import collect

    _check_json(args)
    done = collect(Path(args.run), compress=args.compress)
    if args.json != "-":
        print(done.summary())
    if args.json:
        json_out(args.json, {"path": str(done.path), "counts": done.counts,
                             "damaged": [{"seed_wi": wi, "seed_do": do, "path": str(path),
                                          "why": why} for wi, do, path, why in done.damaged]})


def _check_json(args: argparse.Namespace) -> None:
    """--json FILE: a file that can be written, checked before any work."""
    if args.json and args.json != "-":
        from seedgrid.rundir import check_output

        check_output(args.json, "--json")


def _json_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help=f"{what} as JSON (for scripts): alone on stdout, or written to FILE")


def _import(args: argparse.Namespace) -> None:
    from seedgrid.imported import import_table
    from seedgrid.rundir import CONFIG, SHARDS, check_writable

    out = Path(args.out)
    check_writable(out)
    if (out / CONFIG).exists() or (out / SHARDS).exists():
        raise UsageError(f"--out {str(out)!r} is a run folder seedgrid trains: give another "
                         "folder for the imported runs")
    print(import_table(args.table, out, task=args.task or "", metric=args.metric or "",
                       model=args.model or "").summary())


def _export(args: argparse.Namespace) -> None:
    from seedgrid.export import export

    export(args.cube, args.to, args.metric)


def _report(args: argparse.Namespace) -> None:
    from seedgrid.report import summary, write

    out, report = write(args.runs, args.out, figures_too=not args.no_figures,
                        samples=args.samples, seed=args.seed, chunks=args.chunks)
    print(summary(report))
    print(f"wrote {out / 'report.md'} and {out / 'report.json'}"
          + ("" if args.no_figures else " with figures"))


def _compare(args: argparse.Namespace) -> None:
    from seedgrid.compare import compare, format_result

    if args.b is None:  # `compare --json A B`: A was read as --json's file
        if args.json not in (None, "-") and _a_run(args.json):
            args.a, args.b, args.json = args.json, args.a, "-"
        else:
            raise UsageError("compare needs two runs: compare A B [--json [FILE]]")
    _check_json(args)
    result = compare(args.a, args.b, metric=args.metric, step=args.step, alpha=args.alpha,
                     min_effect=args.min_effect, n_boot=args.boot, test=args.test)
    if args.json != "-":  # with '-' (for scripts) the JSON alone is on stdout
        print(format_result(result))
    for warning in result["warnings"]:  # (also in the JSON)
        logger.warning(warning)
    if args.json:
        json_out(args.json, result)
    sys.exit(1 if result["significant"] else 0)


def _a_run(path: str) -> bool:
    """Whether ``path`` is a run folder or a cube file (what --json may have swallowed)."""
    return Path(path).is_dir() or path.endswith(".nc")


def _regress(args: argparse.Namespace) -> None:
    from seedgrid.regress import gate

    _check_json(args)
    result = gate(args.baseline, args.candidate, Path(args.history), max_drop=args.max_drop,
                  alpha=args.alpha, max_con_drop=args.max_con_drop, metric=args.metric,
                  allow_incomplete=args.allow_incomplete, quiet=args.json == "-")
    if args.json:
        json_out(args.json, result)
    sys.exit(1 if result["regression"] else 0)


def _profiles(args: argparse.Namespace) -> None:
    from seedgrid.grid.profile import load_profile, profiles

    _check_json(args)
    found = []
    for name, path, what in profiles():
        try:
            executor = load_profile(str(path)).executor if path else "local"
        except UsageError as e:  # listed all the same, with what is wrong with it
            executor, what = "?", f"{what}; cannot be used: {e}"
        found.append({"name": name, "executor": executor,
                      "path": str(path) if path else None, "what": what})
        if args.json != "-":
            print(f"{name:<16} {executor:<6} {str(path) if path else '-'}  ({what})")
    if args.json:
        json_out(args.json, found)


def _presets(args: argparse.Namespace) -> None:
    from seedgrid.config import load_config, preset_names, preset_text, presets_table

    _check_json(args)
    if args.name and args.json:
        json_out(args.json, load_config(args.name).to_dict() if args.name in preset_names()
                 else preset_text(args.name))
    elif args.name:
        print(preset_text(args.name), end="")
    elif args.json:
        json_out(args.json, [{"name": n, "model": c.model.name, "task": c.task.name,
                              "seeds_wi": list(c.grid.seeds_wi),
                              "seeds_do": list(c.grid.seeds_do), "coupled": c.grid.coupled,
                              "hash": c.hash}
                             for n in preset_names() for c in [load_config(n)]])
    else:
        print(presets_table())


def _collect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="the run folder")
    p.add_argument("--compress", action="store_true",
                   help="zlib level 1 (smaller file, slower to write and read)")
    _json_arg(p, "the cube's path, counts by status and damaged shards")


def _completion(args: argparse.Namespace) -> None:
    import shtab

    parser = build_parser()
    parser.prog = "seedgrid"  # (the console script: what a shell completes)
    print(shtab.complete(parser, shell=args.shell), end="")


def _completion_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete in")


def _presets_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="a preset: print its TOML (a config to start from)")
    _json_arg(p, "every preset (model, task, seeds, hash), or NAME's config")


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", help="the runs' predictions: .csv, .csv.gz, .tsv or .parquet, a row "
                   "per (seed_wi, seed_do, example, step) with label and logit_0.. or prediction")
    p.add_argument("--out", required=True, help="the run folder to write (its cube.nc)")
    p.add_argument("--task", help="the task's name in reports (default: the table's file name)")
    p.add_argument("--metric", help=METRIC_HELP + "; default accuracy, or pearson for "
                   "real-valued labels")
    p.add_argument("--model", help="the model that made the predictions, for the report")


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("cube", help="a cube file or a run folder")
    p.add_argument("--to", "--out", dest="to", required=True,
                   help="output file: .csv, .csv.gz, .parquet or .json (--out, as the other "
                        "commands); - for CSV on stdout")
    p.add_argument("--metric", help=METRIC_HELP)


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run folders (or cube files) to analyse")
    p.add_argument("--out", help="report folder (default: <first run>/report)")
    p.add_argument("--samples", type=integer(1, 10**6), default=5000,
                   help="simulated experiments per early-stopping configuration (default 5000; "
                        "the paper's 50000 takes about a minute on a 25 x 25 grid)")
    p.add_argument("--seed", type=integer(0, 2**63 - 1), default=0,
                   help="seed of the simulations (default 0)")
    p.add_argument("--no-figures", action="store_true", help="numbers only, no PNG figures")
    p.add_argument("--chunks", choices=["rows"], help="rows: read each cube lazily with dask, "
                   "one WI seed row at a time (a cube larger than memory; needs dask)")


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="run folder or cube of configuration A (the reference)")
    p.add_argument("b", nargs="?", help="run folder or cube of configuration B")
    p.add_argument("--metric", help=METRIC_HELP)
    p.add_argument("--step", default="end", help="end: the last evaluation (default); best: "
                   "each run's best evaluation in training")
    p.add_argument("--alpha", type=number(0, 1, open_ends=True), default=0.05,
                   help="significance level (0.05)")
    p.add_argument("--min-effect", type=number(0, 1), default=0.005,
                   help="smallest difference that matters (0.005 = half a point)")
    p.add_argument("--boot", type=integer(1, 100_000), default=1000,
                   help="bootstrap draws (1000)")
    p.add_argument("--test", default="t", choices=["t", "wilcoxon", "bootstrap"],
                   help="the test the verdict and exit status follow: t (paired t-test, as the "
                        "tutorial; Welch unpaired; default), wilcoxon (signed-rank; Mann-Whitney "
                        "unpaired) or bootstrap; the verdict line says whether the others agree")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="also write the result to this JSON file (alone, or '-': print the "
                        "JSON to stdout instead of the text)")


def _regress_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", required=True, help="run folder or cube of the baseline")
    p.add_argument("--candidate", required=True, help="run folder or cube of tonight's run")
    p.add_argument("--metric", help=METRIC_HELP)
    p.add_argument("--max-drop", type=number(0, 1), default=0.005,
                   help="tolerated drop of the mean metric (0.005)")
    p.add_argument("--max-con-drop", type=number(0, 1), default=0.02,
                   help="tolerated drop of CON, the share of examples all runs agree on (0.02)")
    p.add_argument("--alpha", type=number(0, 1, open_ends=True), default=0.05,
                   help="significance level (0.05)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="judge the cells that finished even if some failed or are missing")
    p.add_argument("--history", default="regress/history.jsonl",
                   help="JSON-lines history, one row per night; its report is the .md beside "
                        "it (default regress/history.jsonl)")
    _json_arg(p, "the night's verdict and numbers")


COMMANDS = {
    **GRID_COMMANDS,
    "collect": (_collect, _collect_args, "collect a run's shards into one cube (cube.nc)", """
        Streams every shard of the run folder into <run>/cube.nc (netCDF4, chunked by WI seed
        row; memory: a shard and one chunk of at most 64 MB a variable at a time). Cells without a valid shard are NaN with status
        'missing'; unreadable shards are reported by cell with the command that reruns them.
        Works while the grid still runs (a partial cube); collecting again rewrites it.

        example:
          python -m seedgrid collect runs/dodge2020-rte
          python -c "import seedgrid; print(seedgrid.open_cube('runs/dodge2020-rte'))"
        """),
    "import": (_import, _import_args, "make a cube of runs trained elsewhere, from a table", """
        Builds <out>/cube.nc from the validation predictions of runs another trainer made
        (transformers' Trainer, Lightning, your own loop), so that report, compare, regress
        and export analyse them as a seed grid. One row per run, example and evaluation:
        seed_wi, seed_do, example, step, label, and logit_0 .. logit_<C-1> (or prediction).
        A run of one seed: its seed in seed_wi, seed_do constant. Repeated rows, a run missing
        rows and an example with two labels are refused in one line.

        example:
          python -m seedgrid import predictions.csv --out runs/trainer-sst2
          python -m seedgrid report runs/trainer-sst2
        """),
    "export": (_export, _export_args, "write a cube's per-cell table: CSV, Parquet, JSON", """
        One row per (seed_wi, seed_do, evaluation): update, epoch, the metric, the best so far,
        the cell's status and wall time; for pandas, R or a spreadsheet.

        example:
          python -m seedgrid export runs/dodge2020-rte --to rte.parquet
        """),
    "report": (_report, _report_args, "analyse cubes: report.md, report.json and figures", """
        Every analysis of the seed papers on each run's cube: mean and variance, WI vs DO
        (Dodge Tables 3-4, permutation test), divergence, best found and expected best of n
        under three evaluation regimes (Table 1, Fig. 1), consistency of predictions (Bui:
        CON, CCON, agreement, equal-accuracy pairs), correlation between evaluations (Fig.
        5, 9), and the early-stopping simulation (Fig. 6, 7). With several runs: WI seeds
        across tasks (Dodge 4.3) and VAR/CON/CCON by training size (Bui Fig. 2).

        example:
          python -m seedgrid report runs/demo
          python -m seedgrid report runs/rte runs/mrpc runs/cola --out reports/glue
        """),
    "compare": (_compare, _compare_args, "is B really different from A? tests over seeds", """
        Pairs runs by (seed_wi, seed_do) when both grids share cells (paired), else unpaired,
        and says which. Paired t-test and Wilcoxon (unpaired: Welch, Mann-Whitney), the
        multibootstrap CI over seeds and examples, Almost Stochastic Order, Cohen's d_z and
        d_av, the seeds needed for 80% power, and how many predictions changed beyond the
        seed-to-seed churn. Warns about too few seeds, best-seed comparisons and negligible
        significant differences. The verdict follows --test (the paired t-test by default)
        and says when the other tests disagree. Exit status: 0 not significant, 1 significant
        (either direction: see the difference), 2 bad input.

        example:
          python -m seedgrid compare runs/baseline runs/new-lr --json compare.json
        """),
    "regress": (_regress, _regress_args, "the regression gate: fail if the candidate is worse", """
        Exit 1 when the candidate is significantly (one-sided, --alpha) worse than the
        baseline by more than --max-drop on the metric, or significantly less consistent by
        more than --max-con-drop; else 0. Appends the night to --history (JSON lines) and
        rewrites its report (the .md beside it) with the trend. seedgrid-nightly runs it
        after the night's grid.

        example:
          python -m seedgrid regress --baseline runs/baseline --candidate runs/nightly-2026-11-23
        """),
    "profiles": (_profiles, lambda p: _json_arg(p, "every profile (name, executor, file)"), "list the cluster profiles --cluster finds", """
        Every profile --cluster NAME finds, in the order it looks (./cluster/NAME.toml, your
        site's, before those installed with seedgrid), with its executor and file; one that
        cannot be read is an error naming it.

        example:
          python -m seedgrid profiles
        """),
    "completion": (_completion, _completion_args, "print a shell completion script", """
        Commands, options and their choices, completed by the shell.

        example:
          source <(python -m seedgrid completion bash)        # in ~/.bashrc
          python -m seedgrid completion zsh > ~/.zfunc/_seedgrid
        """),
    "presets": (_presets, _presets_args, "list the packaged configs and tasks, or print one", """
        example:
          python -m seedgrid presets
          python -m seedgrid presets dodge2020-rte > my-rte.toml    # a config to start from
        """),
}


def _program() -> str:
    """The program as it was invoked (:func:`seedgrid.rundir.program`)."""
    from seedgrid.rundir import program

    return program()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=_program(),
        description="Seed grids for fine-tuning: is this result real, or was it the random seed?",
        epilog="example (a 2 x 2 grid on this machine, then its cube and report):\n"
               "  python -m seedgrid submit --config demo --cluster local --wait\n"
               "  python -m seedgrid collect runs/demo\n"
               "  python -m seedgrid report runs/demo",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from seedgrid.version import __version__

    parser.add_argument("--version", action="version", version=f"seedgrid {__version__}")
    _verbosity_args(parser, 0)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (func, add_args, summary, details) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary + "\n" + textwrap.dedent(details),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        add_args(p)
        _verbosity_args(p, argparse.SUPPRESS)  # also after the command: report -q runs/x
    return parser


def _verbosity_args(p: argparse.ArgumentParser, default) -> None:
    p.add_argument("-q", "--quiet", action="count", default=default,
                   help="less on stderr: -q warnings only, -qq errors only (results stay)")
    p.add_argument("-v", "--verbose", action="count", default=default,
                   help="more on stderr: debug lines and transformers' own messages")


#: exit statuses: 0 fine (pass, not significant), 1 a verdict (a cell not done, significant,
#: regression), 2 bad input, 3 an unexpected error or a full disk — never read as a verdict
UNEXPECTED = 3


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from seedgrid import log

    log.configure(args.verbose - args.quiet)
    try:
        args.func(args)
    except UsageError as e:
        print(f"seedgrid: error: {log.clean_lines(str(e))}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        print(f"seedgrid: {log.clean_lines(str(e))}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("seedgrid: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `| head` closed the pipe: end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except Exception as e:
        from seedgrid.files import DiskFullError

        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            e = DiskFullError(e.errno, f"no space left on the device ({e.strerror}"
                              + (f": {e.filename}" if e.filename else "") + "): free space (or "
                              "raise the quota) and run again; nothing finished was lost")
        if not isinstance(e, DiskFullError):
            traceback.print_exc()
        print(log.clean_lines(f"seedgrid: error: {e}" if isinstance(e, DiskFullError) else
                              f"seedgrid: unexpected error ({type(e).__name__}: "
                              f"{str(e)[:200]}); exit status {UNEXPECTED}: please report it "
                              "with the traceback above"), file=sys.stderr)
        sys.exit(UNEXPECTED)
