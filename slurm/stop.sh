#!/usr/bin/env bash
# Stop the daemons that slurm/start.sh started (by their recorded PIDs; nothing else).
#   slurm/stop.sh [--quiet]
set -uo pipefail
DIR=${SEEDGRID_SLURM_DIR:-/var/tmp/seedgrid-slurm}
quiet=${1:-}
stopped=()
for name in slurmd slurmctld slurmdbd mariadbd munged; do   # reverse start order
    pidfile=$DIR/run/$name.pid
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -9 "$pid" 2>/dev/null
        stopped+=("$name")
    fi
    rm -f "$pidfile"
done
[ "$quiet" = --quiet ] || echo "slurm/stop.sh: stopped ${stopped[*]:-nothing}"
exit 0
