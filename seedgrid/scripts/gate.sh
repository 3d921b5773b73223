#!/usr/bin/env bash
# The nightly gate job that nightly.sh submits (afterok on tonight's arrays): collect
# tonight's cube, then regress it against the baseline. Everything arrives as arguments, never
# pasted into a shell string, so no path or option can break the gate or run as a command:
#   gate.sh WORKDIR PYTHON RUN BASELINE HISTORY [REGRESS OPTIONS...]
# Its exit status is the night's verdict: 0 pass, 1 regression (or a failed/missing cell),
# 2 bad input, 3 an unexpected error.
set -euo pipefail
[ $# -ge 5 ] || { echo "usage: gate.sh WORKDIR PYTHON RUN BASELINE HISTORY [regress options]" >&2; exit 2; }
cd -- "$1"
PYTHON=$2 RUN=$3 BASELINE=$4 HISTORY=$5
shift 5
"$PYTHON" -m seedgrid collect "$RUN"
exec "$PYTHON" -m seedgrid regress --baseline "$BASELINE" --candidate "$RUN" --history "$HISTORY" "$@"
