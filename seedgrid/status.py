"""Where a run stands, from any shell: shards on disk first, sacct for the rest.

A cell with a shard is ``done`` or ``diverged`` (its shard says which), whatever SLURM says. A
cell without one takes the state of the last array task it was given: ``running``, ``pending``,
or ``failed`` (with SLURM's state and the last line of the task's log as the reason). A task
that SLURM calls COMPLETED but that left no shard failed too: submitit ends a job normally
after recording the worker's exception. Cells never submitted, or whose task sacct does not
know (SLURM keeps no record of an array task cancelled before it started), are ``missing``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from seedgrid.config import Config
from seedgrid.dispatch import grid_cells, read_jobs
from seedgrid.rundir import load_run_config
from seedgrid.store import shard_path, shard_status

SYMBOLS = {"done": "#", "diverged": "!", "stopped": "s", "running": "R", "pending": ".",
           "failed": "x", "missing": "-"}
_WAITING = {"PENDING", "REQUEUED", "RESIZING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED"}


@dataclass
class CellState:
    state: str
    task: str = ""  # submitit's job id of the task: "<array job>_<index>" (or "<job>")
    reason: str = ""


def run_status(run_dir: Path) -> tuple[Config, dict[tuple[int, int], CellState], str]:
    """The config, each cell's state, and a note when sacct could not be read."""
    cfg = load_run_config(run_dir)
    tasks = _last_task_of_each_cell(run_dir)
    slurm_ids = sorted({t.split("_")[0] for t, executor in tasks.values() if executor == "slurm"})
    states, note = _sacct(slurm_ids) if slurm_ids else ({}, "")
    cells = {}
    for cell in grid_cells(cfg):
        path = shard_path(run_dir, *cell)
        task, _ = tasks.get(cell, ("", ""))
        if path.exists():
            cells[cell] = CellState(shard_status(path), task)
        elif task in states:
            slurm_state = states[task]
            if slurm_state == "RUNNING":
                cells[cell] = CellState("running", task)
            elif slurm_state in _WAITING:
                cells[cell] = CellState("pending", task)
            else:
                cells[cell] = CellState("failed", task, f"{slurm_state}; {_last_log_line(run_dir, task)}")
        elif task and states:
            cells[cell] = CellState("missing", task, "unknown to sacct: cancelled before it "
                                                     "started, or accounting lags")
        else:
            cells[cell] = CellState("missing", task)
    return cfg, cells, note


def format_status(run_dir: Path, cluster: str = "") -> str:
    cfg, cells, note = run_status(run_dir)
    counts = {s: sum(c.state == s for c in cells.values()) for s in SYMBOLS}
    jobs = sorted({a["job_id"] for s in read_jobs(run_dir)["submissions"] for a in s["arrays"]})
    lines = [f"{run_dir}: config {cfg.hash}, {len(cfg.grid.seeds_wi)} x {len(cfg.grid.seeds_do)} "
             f"cells, array job(s) {', '.join(jobs) or 'none'}",
             "  " + "  ".join(f"{s} {n}" for s, n in counts.items())]
    width = max(len(str(d)) for d in cfg.grid.seeds_do)
    lines.append("  wi \\ do " + " ".join(f"{d:>{width}}" for d in cfg.grid.seeds_do))
    for wi in cfg.grid.seeds_wi:
        row = " ".join(f"{SYMBOLS[cells[wi, do].state]:>{width}}" for do in cfg.grid.seeds_do)
        lines.append(f"  {wi:>7} " + row)
    lines.append("  " + "  ".join(f"{sym} {s}" for s, sym in SYMBOLS.items()))
    if note:
        lines.append(f"  note: {note}")
    lines += _policy_lines(run_dir)
    explained = [(c, s) for c, s in cells.items() if s.reason]
    for (wi, do), s in explained[:20]:
        lines.append(f"  {s.state} (wi={wi}, do={do}) task {s.task}: {s.reason}")
    if len(explained) > 20:
        lines.append(f"  ... and {len(explained) - 20} more")
    if counts["failed"] or counts["missing"]:
        option = f" --cluster {cluster}" if cluster else ""
        lines.append(f"resubmit the cells without a shard: python -m seedgrid submit --resume "
                     f"{run_dir}{option}")
    return "\n".join(lines)


def _policy_lines(run_dir: Path) -> list[str]:
    """The phases of an --early-stop run: started, stopped, continued, and the time spent."""
    from seedgrid import policy

    record = policy.read(run_dir)
    if record is None:
        return []
    lines = [f"  early stop ({record['source']}): started {record['started']}, stop at "
             f"{record['fraction']:g} of training, continue {record['continued']}; phase "
             f"{record['phase']}"]
    if record["continued_cells"] is not None:
        chosen = " ".join(f"({wi},{do})" for wi, do in record["continued_cells"])
        lines.append(f"  continued {len(record['continued_cells'])}: {chosen}; decided on "
                     f"{record['decided_on']} finished phase-one cell(s)"
                     + (f", {len(record['missing'])} without a shard" if record["missing"]
                        else ""))
    spent = policy.accounting(run_dir)
    if spent["all_full_estimate"]:
        lines.append(f"  time: {spent['cell_seconds']:.0f} cell-seconds spent vs about "
                     f"{spent['all_full_estimate']:.0f} to train all {record['started']} fully "
                     f"({100 * spent['saved']:.0f}% saved); best found by a continued cell "
                     f"{spent['realised_best']:.4f}"
                     + (f" (the simulation expected {spent['predicted']:.4f}, "
                        f"{spent['predicted_baseline']:.4f} without stopping)"
                        if spent["predicted"] is not None else ""))
    return lines


def _last_task_of_each_cell(run_dir: Path) -> dict[tuple[int, int], tuple[str, str]]:
    tasks = {}
    for sub in read_jobs(run_dir)["submissions"]:  # later submissions win
        for array in sub["arrays"]:
            for task_id, cells in zip(array["task_ids"], array["tasks"]):
                for wi, do in cells:
                    tasks[wi, do] = (task_id, sub["executor"])
    return tasks


def ended(job_ids: list[str]) -> bool:
    """Whether every task of these jobs has left the queue (by sacct; False if unknown)."""
    states, note = _sacct(job_ids)
    return bool(states) and not note and all(
        s != "RUNNING" and s not in _WAITING for s in states.values())


def _sacct(job_ids: list[str]) -> tuple[dict[str, str], str]:
    """State of each array task ("<job>_<index>" → "RUNNING", ...) from sacct."""
    try:
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j",
                              ",".join(job_ids)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {}, f"sacct unavailable ({e}); states of cells without a shard are unknown"
    if out.returncode != 0:
        first = (out.stderr.strip().splitlines() or ["no message"])[0][:120]
        return {}, f"sacct failed ({first}); states of cells without a shard are unknown"
    states = {}
    for line in out.stdout.splitlines():
        job, _, state = line.partition("|")
        state = state.split()[0] if state else ""
        base, _, index = job.partition("_")
        if index.startswith("["):  # a pending range: 31_[2-7%4]
            for part in index.strip("[]").split("%")[0].split(","):
                lo, _, hi = part.partition("-")
                for i in range(int(lo), int(hi or lo) + 1):
                    states[f"{base}_{i}"] = state
        else:  # one array task, or a plain job (submitit sends a one-task array as a job)
            states[job] = state
    return states, ""


def _last_log_line(run_dir: Path, task: str) -> str:
    log = run_dir / "logs" / f"{task}_0_log.err"  # submitit's: <job id>_<rank>_log.err
    if not log.exists():
        return "no log"
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return f"log: {lines[-1][:200]}" if lines else "empty log"
