"""Where a run stands, from any shell: shards on disk first, then the queue for the rest.

A cell with a shard is ``done``, ``diverged`` or ``stopped`` (its shard says which), whatever
SLURM says; an unreadable shard is ``damaged`` (the next submit --resume sets it aside and
trains the cell again). A cell without one takes the state of the last task it was given:
``running``, ``pending``, or ``failed`` (with the task's state and the error line of its log as
the reason). On SLURM the state comes from sacct; a task that SLURM calls COMPLETED but that
left no shard failed too (submitit ends a job normally after recording the worker's
exception). With the local executor a task is a process of this machine: alive, its cells are
``running`` (a marker in ``running/`` says which) or ``pending``; ended, a cell without a shard
``failed``. Cells never submitted, or whose task sacct does not know (SLURM keeps no record of
an array task cancelled before it started), are ``missing``. In an --early-stop run, cells
outside phase one are ``unused``: no command trains them.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from seedgrid.config import Config
from seedgrid.errors import Interrupted
from seedgrid.progress import Progress
from seedgrid.grid import early_stop, local, slurm
from seedgrid.grid.cells import backend
from seedgrid.rundir import (cell_state, claimed, command, decider_log, load_run_config, read_jobs, recorded_cluster,
                             resubmit_command, running_marker, shards_on_disk,
                             task_log)
from seedgrid.files import read_regular, read_tail
from seedgrid.log import clean_text

SYMBOLS = {"done": "#", "diverged": "!", "stopped": "s", "running": "R", "pending": ".",
           "failed": "x", "damaged": "?", "missing": "-", "unused": " "}


@dataclass
class CellState:
    state: str
    task: str = ""  # submitit's job id of the task: "<array job>_<index>", "<job>", or a pid
    reason: str = ""


def run_cells(run_dir: Path, cfg: Config) -> list[tuple[int, int]]:
    """The config's grid, widened by any cell whose shard is on disk (as collect does)."""
    on_disk = shards_on_disk(run_dir)
    wi = sorted(set(cfg.grid.seeds_wi) | {c[0] for c in on_disk})
    do = sorted(set(cfg.grid.seeds_do) | {c[1] for c in on_disk})
    return [(w, d) for w in wi for d in do]


def run_status(run_dir: Path) -> tuple[Config, dict[tuple[int, int], CellState], str]:
    """The config, each cell's state, and a note when the queue could not be read."""
    cfg = load_run_config(run_dir)
    tasks = _last_task_of_each_cell(run_dir)
    slurm_ids = sorted({t.split("_")[0] for t, executor, _ in tasks.values()
                        if executor == "slurm"})
    states, note = slurm.states(slurm_ids) if slurm_ids else ({}, "")
    plan = early_stop.read(run_dir)
    phase_one = {tuple(c) for c in plan["phase_one"]} if plan else None
    cells = {}
    design = set(cfg.grid.cells())
    for cell in run_cells(run_dir, cfg):
        state = cell_state(run_dir, cell)
        task, executor, host = tasks.get(cell, ("", "", ""))
        if state == "damaged":
            cells[cell] = CellState("damaged", task, "the shard cannot be read: submit --resume "
                                                     "sets it aside and trains the cell again")
        elif state is not None:
            cells[cell] = CellState(state, task)
        elif claimed(run_dir, cell):  # a process holds it, whatever submitted it
            cells[cell] = CellState("running", task)
        elif executor == "local" and host == socket.gethostname():
            cells[cell] = _local_state(run_dir, cell, task)
        elif task in states:
            cells[cell] = _slurm_state(run_dir, states[task], task)
        elif not task and (phase_one is not None and cell not in phase_one
                           or cfg.grid.coupled and cell not in design):
            cells[cell] = CellState("unused", task)
        elif task and states:
            cells[cell] = CellState("missing", task, "unknown to sacct: cancelled before it "
                                                     "started, or accounting lags")
        else:
            cells[cell] = CellState("missing", task)
    for cell, c in cells.items():
        if c.state == "running":
            c.reason = _where(run_dir, cell)
    return cfg, cells, note


def _where(run_dir: Path, cell: tuple[int, int]) -> str:
    """Where a running cell trains, from its marker: "on <host>, GPU <ids>" (or CPU); "" for
    a cell of a running task that has not started yet."""
    try:
        marker = json.loads(read_regular(running_marker(run_dir, *cell), 1 << 16))
    except (OSError, ValueError):
        return ""
    if not isinstance(marker, dict):
        return ""
    gpu = clean_text(str(marker.get("gpu") or ""))[:200]  # (a file: what it says is shown
    host = clean_text(str(marker.get("host", "?")))[:200]  # escaped, never sent raw)
    return f"on {host}, " + (f"GPU {gpu}" if gpu else "CPU")


def _slurm_state(run_dir: Path, slurm_state: str, task: str) -> CellState:
    if slurm_state == "RUNNING":
        return CellState("running", task)
    if slurm_state in slurm.WAITING:
        return CellState("pending", task)
    return CellState("failed", task, f"{slurm_state}; {last_log_line(run_dir, task)}")


def _local_state(run_dir: Path, cell: tuple[int, int], task: str) -> CellState:
    """A local task is a process of this machine (its job id is the pid)."""
    if local.alive(task):
        marker = running_marker(run_dir, *cell)
        return CellState("running" if marker.exists() else "pending", task)
    return CellState("failed", task, f"the task (process {task}) ended without its shard; "
                                     f"{last_log_line(run_dir, task)}")


def counts(cells: dict[tuple[int, int], CellState]) -> dict[str, int]:
    return {s: sum(c.state == s for c in cells.values()) for s in SYMBOLS}


def status_json(run_dir: Path) -> dict:
    """``status --json``: the counts, every cell's state (and why), and the queue note."""
    cfg, cells, note = run_status(run_dir)
    jobs = read_jobs(run_dir)
    return {"seedgrid_status": 1, "run": str(run_dir), "config_hash": cfg.hash,
            "counts": counts(cells),
            "cells": [{"seed_wi": wi, "seed_do": do, "state": c.state, "task": c.task,
                       "reason": c.reason} for (wi, do), c in cells.items()],
            "arrays": sorted({a["job_id"] for s in jobs["submissions"] for a in s["arrays"]}),
            "cluster": recorded_cluster(jobs) or None,
            "early_stop": early_stop.read(run_dir), "note": note or None}


def format_status(run_dir: Path, cluster: str = "") -> str:
    cfg, cells, note = run_status(run_dir)
    n = counts(cells)
    jobs = read_jobs(run_dir)
    ids = sorted({a["job_id"] for s in jobs["submissions"] for a in s["arrays"]})
    cluster = cluster or recorded_cluster(jobs)
    seeds_wi = sorted({wi for wi, _ in cells})
    seeds_do = sorted({do for _, do in cells})
    lines = [f"{run_dir}: config {cfg.hash}, {len(seeds_wi)} x {len(seeds_do)} "
             f"cells, array job(s) {', '.join(ids) or 'none'}",
             "  " + "  ".join(f"{s} {k}" for s, k in n.items() if k or s in _ALWAYS)]
    width = max([len(str(d)) for d in seeds_do] + [1])
    lines.append("  wi \\ do " + " ".join(f"{d:>{width}}" for d in seeds_do))
    for wi in seeds_wi:
        row = " ".join(f"{SYMBOLS[cells[wi, do].state]:>{width}}" for do in seeds_do)
        lines.append(f"  {wi:>7} " + row)
    lines.append("  " + "  ".join(f"{sym} {s}" for s, sym in SYMBOLS.items()
                                  if s in _ALWAYS or n[s]))
    if note:
        lines.append(f"  note: {note}")
    lines += _early_stop_lines(run_dir, cluster, cells)
    explained = [(c, s) for c, s in cells.items() if s.reason]
    for (wi, do), s in explained[:20]:
        lines.append(f"  {s.state} (wi={wi}, do={do}) task {s.task}: {s.reason}")
    if len(explained) > 20:
        lines.append(f"  ... and {len(explained) - 20} more")
    unfixable = sum(1 for s in cells.values() if s.state == "failed" and bad_input(s.reason))
    if unfixable:  # a resume runs the same config on the same model and data: it fails again
        lines.append(f"{unfixable} cell(s) failed on their input (the model, the data or the "
                     "config: the error lines above): a resume would fail again; fix it and "
                     "submit a new run (--out)")
    if n["failed"] - unfixable or n["missing"] or n["damaged"]:
        lines.append(f"resubmit the cells without a finished shard: "
                     f"{resubmit_command(run_dir, cluster)}")
    return "\n".join(lines)


def bad_input(reason: str | None) -> bool:
    """Whether a failed cell's reason is bad input (seedgrid's UsageError: a model that does
    not load, data that does not check), which no rerun of the same config can mend."""
    return bool(reason) and ("UsageError" in str(reason) or "seedgrid: error:" in str(reason))


#: states always shown in the counts line (the others only when some cell has them)
_ALWAYS = ("done", "diverged", "running", "pending", "failed", "missing")


def _early_stop_lines(run_dir: Path, cluster: str,
                  cells: dict[tuple[int, int], CellState]) -> list[str]:
    """The phases of an --early-stop run: started, stopped, continued, the time spent, and
    what to do when phase two did not follow."""
    record = early_stop.read(run_dir)
    if record is None:
        return []
    lines = [f"  early stop ({record['source']}): started {record['started']}, stop at "
             f"{record['fraction']:g} of training, continue {record['continued']}; phase "
             f"{record['phase']}"]
    option = ["--cluster", cluster] if cluster else []
    if record["continued_cells"] is not None:
        chosen = " ".join(f"({wi},{do})" for wi, do in record["continued_cells"])
        lines.append(f"  continued {len(record['continued_cells'])}: {chosen}; decided on "
                     f"{record['decided_on']} finished phase-one cell(s)"
                     + (f", {len(record['missing'])} without a shard" if record["missing"]
                        else ""))
    elif not record.get("decider_job"):  # the local executor: phase two is a command
        ended = all(cells[tuple(c)].state not in ("running", "pending")
                    for c in record["phase_one"] if tuple(c) in cells)
        lines.append("  phase one has ended; phase two: " if ended else
                     "  phase one is still running; then phase two: ")
        lines[-1] += command("continue", run_dir, *option)
    else:
        states, _ = slurm.states([record["decider_job"]])
        state = states.get(record["decider_job"], "unknown to sacct")
        if state == "RUNNING" or state in slurm.WAITING:
            lines.append(f"  phase two: decider job {record['decider_job']} is {state}; it "
                         "decides once phase one has ended")
        else:
            lines.append(f"  phase two: decider job {record['decider_job']} ended ({state}) "
                         f"without deciding (log {decider_log(run_dir)}): "
                         + command("continue", run_dir, *option))
    spent = early_stop.accounting(run_dir)
    if spent["all_full_estimate"]:
        lines.append(f"  time: {spent['cell_seconds']:.0f} cell-seconds spent vs about "
                     f"{spent['all_full_estimate']:.0f} to train all {record['started']} fully "
                     f"({100 * spent['saved']:.0f}% saved); best found by a continued cell "
                     f"{spent['realised_best']:.4f}"
                     + (f" (the simulation expected {spent['predicted']:.4f}, "
                        f"{spent['predicted_baseline']:.4f} without stopping)"
                        if spent["predicted"] is not None else ""))
    return lines


def _last_task_of_each_cell(run_dir: Path) -> dict[tuple[int, int], tuple[str, str, str]]:
    """Each submitted cell's last task: (task id, executor, submitting host)."""
    tasks = {}
    for sub in read_jobs(run_dir)["submissions"]:  # later submissions win
        for array in sub["arrays"]:
            for task_id, cells in zip(array["task_ids"], array["tasks"]):
                for wi, do in cells:
                    tasks[wi, do] = (task_id, sub["executor"], sub.get("host", ""))
    return tasks


#: a Python exception line ("ValueError: ..."), seedgrid's own error line, or SLURM's
#: ("slurmstepd: error: *** JOB 12 ON node CANCELLED AT ...")
_ERROR_LINE = re.compile(r"^(seedgrid: error:|[\w.]*(Error|Exception|Interrupt)\b)|error: \*\*\*")


def last_log_line(run_dir: Path, task: str) -> str:
    """The line of a task's log that says why it failed: its last error line (the exception
    of a traceback), else its last line."""
    try:  # the end of the log only: a task may have logged gigabytes
        tail = read_tail(task_log(run_dir, task))
    except FileNotFoundError:
        return "no log"
    except OSError as e:
        return f"log unreadable ({e.strerror})"
    lines = [clean_text(ln.strip()) for ln in tail.splitlines() if ln.strip()]
    errors = [ln for ln in lines if _ERROR_LINE.search(ln)]
    return f"log: {(errors or lines)[-1][:200]}" if lines else "empty log"


def wait_for(jobs: list, run_dir: Path, cells: list, stopped_counts: bool = True) -> None:
    """Print how many of ``cells`` have shards, as it changes, until the jobs end (phase two of
    --early-stop: ``stopped_counts=False``, a stopped shard is not finished yet). Interrupted
    (Ctrl-C, SIGTERM), raises Interrupted saying which tasks keep running (exit 130)."""
    terminated = []

    def interrupted(signum, frame):  # SIGTERM: for this process only, not its local tasks
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    progress = Progress(len(cells), len(jobs), run_dir)
    try:
        while True:
            ended = sum(job.done() for job in jobs)
            states = [cell_state(run_dir, c) for c in cells]
            done = sum(s not in (None, "damaged") and (stopped_counts or s != "stopped")
                       for s in states)
            progress.show(done, states.count("diverged"), ended, final=ended == len(jobs))
            if ended == len(jobs):
                return
            time.sleep(2)
    except KeyboardInterrupt:
        # A Ctrl-C in a terminal reaches local tasks too (one process group): each saves its
        # cells' checkpoints and ends. Give them the time to, then say what really happened.
        local = [] if terminated else [job for job in jobs if type(job).__name__ == "LocalJob"]
        deadline = time.monotonic() + 30
        while any(not job.done() for job in local) and time.monotonic() < deadline:
            time.sleep(0.5)
        alive = [job.job_id for job in jobs if not job.done()]
        ended = len(jobs) - len(alive)
        raise Interrupted(f"stopped waiting; {len(alive)} of {len(jobs)} task(s) keep running"
                          + (f" ({' '.join(alive)})" if alive else "")
                          + (f", {ended} ended" if ended else "")
                          + (" (local tasks take the Ctrl-C too: their cells saved checkpoints)"
                             if local and ended else "")
                          + f": {command('status', run_dir)} shows them, "
                          f"{resubmit_command(run_dir)} reruns what did not finish") from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_and_report(jobs: list, run_dir: Path, cells: list, profile, *,
                    stopped_counts: bool = True) -> bool:
    """--wait: progress until the tasks end, why tasks failed, the final status (once the
    queue's accounting agrees that they ended); True when every cell is done."""
    wait_for(jobs, run_dir, cells, stopped_counts)
    # why a task failed, from its log (text): never from submitit's result pickle, which
    # job.result() would unpickle — code, were someone else to swap it
    for array in read_jobs(run_dir)["submissions"][-1]["arrays"]:
        for task, task_cells in zip(array["task_ids"], array["tasks"]):
            if any(cell_state(run_dir, c) in (None, "damaged") for c in task_cells):
                print(f"task {task} failed: {last_log_line(run_dir, task)}")
    backend(profile).settle(read_jobs(run_dir)["submissions"][-1])
    print(format_status(run_dir, profile.name))
    return all(cell_state(run_dir, c) == "done" for c in cells)  # not diverged


def wait_phase_two(run_dir: Path, poll_s: float = 5.0) -> bool:
    """Until the decider has decided and phase two's tasks have ended; True when every
    continued cell is done."""
    while True:
        rec = early_stop.read_record(run_dir)
        if rec["continued_cells"] is None:
            if slurm.settled([rec["decider_job"]]):
                time.sleep(poll_s)  # it may have written its decision just now
                if early_stop.read_record(run_dir)["continued_cells"] is None:
                    print(format_status(run_dir))  # says why, and the command to decide
                    return False
        else:
            final = [cell_state(run_dir, c) != "stopped"
                     for c in rec["continued_cells"]]
            if all(final):
                break
            if rec.get("phase_two_jobs") and slurm.settled(rec["phase_two_jobs"].split(", ")):
                break
        time.sleep(poll_s)
    print(format_status(run_dir))
    rec = early_stop.read_record(run_dir)
    return all(cell_state(run_dir, c) == "done" for c in rec["continued_cells"])
