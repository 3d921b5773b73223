#!/usr/bin/env bash
# The nightly regression gate on a SLURM cluster: tonight's small seed grid as an array, then a
# dependent job (afterok) that collects its cube and runs `seedgrid regress` against the stored
# baseline. The gate job's exit status (sacct's ExitCode) is the verdict: 0 pass, 1 regression
# (or a failed/missing cell). If the array fails, the gate job is cancelled by SLURM
# (--kill-on-invalid-dep), never left pending.
#
#   seedgrid-nightly --config demo --cluster mysite --array 16 --baseline runs/baseline \
#       [--parallel K] [--out-root runs/nightly] [--name nightly-2026-11-23] \
#       [--history regress/history.jsonl] [--gate-sbatch "--partition=cpu --time=30"] \
#       [-- REGRESS OPTIONS, e.g. --max-drop 0.01]
#
# cron (02:00 every night; cron's environment is bare, so name the cluster and Python):
#   0 2 * * * cd /path/to/repo && SLURM_CONF=/etc/slurm/slurm.conf .venv/bin/seedgrid-nightly ... >> regress/nightly.log 2>&1
# scrontab (SLURM's own cron: `scrontab -e`):
#   #SCRON --time=5
#   0 2 * * * cd /path/to/repo && .venv/bin/seedgrid-nightly ...
#
# Where to look: regress/history.md (every night and the trend), <run>/gate.log (tonight's
# gate), `sacct -j $(cat <run>/gate_job)` (the exit status). PYTHON (default: .venv/bin/python
# if present, else python3) runs seedgrid.
set -euo pipefail

usage() { echo "usage: seedgrid-nightly --config C --cluster P --array N --baseline RUN [options] [-- regress options]" >&2; exit 2; }
# --help: this file's header, the comment lines between the shebang and `set`
help() { sed -n '2,/^set /p' "$0" | sed -e '/^set /d' -e 's/^# \{0,1\}//'; exit 0; }

CONFIG= CLUSTER= ARRAY= BASELINE= PARALLEL= OUT_ROOT=runs/nightly NAME=nightly-$(date +%F)
HISTORY=regress/history.jsonl GATE_SBATCH=
while [ $# -gt 0 ]; do
    case $1 in
        --config) CONFIG=$2; shift 2 ;;
        --cluster) CLUSTER=$2; shift 2 ;;
        --array) ARRAY=$2; shift 2 ;;
        --baseline) BASELINE=$2; shift 2 ;;
        --parallel) PARALLEL=$2; shift 2 ;;
        --out-root) OUT_ROOT=$2; shift 2 ;;
        --name) NAME=$2; shift 2 ;;
        --history) HISTORY=$2; shift 2 ;;
        --gate-sbatch) GATE_SBATCH=$2; shift 2 ;;
        -h|--help) help ;;
        --) shift; break ;;
        *) echo "seedgrid-nightly: unknown option $1" >&2; usage ;;
    esac
done
[ -n "$CONFIG" ] && [ -n "$CLUSTER" ] && [ -n "$ARRAY" ] && [ -n "$BASELINE" ] || usage
case $NAME in
    *[!A-Za-z0-9._-]*|"") echo "seedgrid-nightly: --name '$NAME' may hold only letters, digits and . _ -: choose a plain name" >&2; exit 2 ;;
esac
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=$(pwd)/.venv/bin/python; else PYTHON=python3; fi
fi
command -v sbatch >/dev/null || { echo "seedgrid-nightly: sbatch is not on PATH: run on a SLURM login node" >&2; exit 2; }
[ -e "$BASELINE" ] || { echo "seedgrid-nightly: no baseline at '$BASELINE': give a collected run folder or cube (--baseline)" >&2; exit 2; }
EXECUTOR=$("$PYTHON" -c 'import sys
from seedgrid.grid.profile import load_profile
from seedgrid.errors import UsageError
try:
    print(load_profile(sys.argv[1]).executor)
except UsageError as e:
    print(e)' "$CLUSTER")
[ "$EXECUTOR" = slurm ] || { echo "seedgrid-nightly: --cluster '$CLUSTER' must be a SLURM profile (the gate is a SLURM job after tonight's arrays): $EXECUTOR" >&2; exit 2; }
# the gate's sbatch options, split into words as written, never glob-expanded
read -r -a GATE_OPTIONS <<< "$GATE_SBATCH"
RUN=$OUT_ROOT/$NAME
[ -e "$RUN" ] && { echo "seedgrid-nightly: '$RUN' exists: tonight's run was already submitted; give another --name" >&2; exit 2; }

# 1. tonight's grid, as array tasks
"$PYTHON" -m seedgrid submit --config "$CONFIG" --cluster "$CLUSTER" --array "$ARRAY" \
    ${PARALLEL:+--parallel "$PARALLEL"} --out "$RUN"
ARRAYS=$("$PYTHON" -c 'import json, sys
subs = json.load(open(sys.argv[1]))["submissions"]
print(":".join(a["job_id"] for s in subs for a in s["arrays"]))' "$RUN/jobs.json")

# 2. the gate, once every array task ended well; cancelled by SLURM if one did not. Paths and
# regress options go to gate.sh (beside this script) as arguments (sbatch passes them through).
HERE=$(pwd) SCRIPTS=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
JOB=$(sbatch --parsable --job-name="seedgrid-gate-$NAME" --dependency="afterok:$ARRAYS" \
    --kill-on-invalid-dep=yes --output="$RUN/gate.log" "${GATE_OPTIONS[@]}" \
    "$SCRIPTS/gate.sh" "$HERE" "$PYTHON" "$RUN" "$BASELINE" "$HISTORY" "$@")
echo "$JOB" > "$RUN/gate_job"
echo "nightly $NAME: array job(s) ${ARRAYS//:/ }; gate job $JOB runs after them (log $RUN/gate.log, history $HISTORY)"
