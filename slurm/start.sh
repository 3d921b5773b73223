#!/usr/bin/env bash
# Start a real single-node SLURM with accounting, for development and CI (root, no systemd):
# munged, mariadbd, slurmdbd, slurmctld, slurmd — each in its own session, its PID recorded.
# Idempotent: a running cluster is left as it is. Stop it with slurm/stop.sh.
#
#   slurm/install.sh && slurm/start.sh && source /var/tmp/seedgrid-slurm/env.sh
#
# Everything lives under $SEEDGRID_SLURM_DIR (default /var/tmp/seedgrid-slurm); the system's
# /etc/slurm is not touched: clients find the cluster through SLURM_CONF (see env.sh).
# The node advertises 8 CPUs (on fewer real cores, for concurrency) and 2 fake GPUs (GRES on
# clones of /dev/null), so GPU requests are scheduled and limited as on a real cluster.
set -euo pipefail

DIR=${SEEDGRID_SLURM_DIR:-/var/tmp/seedgrid-slurm}
NODE=$(hostname -s)
CLUSTER=seedgrid
export SLURM_CONF=$DIR/etc/slurm.conf
mkdir -p "$DIR"/{etc,run,log,state,spool,dev} /run/munge /run/mysqld
chown munge:munge /run/munge

alive() { [ -f "$DIR/run/$1.pid" ] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    for _ in $(seq $((limit * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
    echo "slurm/start.sh: $what did not come up in ${limit}s; logs in $DIR/log" >&2
    return 1
}
start() {  # start NAME COMMAND... : in its own session, PID recorded
    local name=$1; shift
    setsid "$@" >>"$DIR/log/$name.out" 2>&1 < /dev/null &
    echo $! > "$DIR/run/$name.pid"
}

if alive slurmctld && alive slurmd && alive slurmdbd && sinfo -h >/dev/null 2>&1; then
    echo "slurm/start.sh: already running (SLURM_CONF=$SLURM_CONF)"
    exit 0
fi
"$(dirname "$0")/stop.sh" --quiet || true

# --- configuration ---------------------------------------------------------------------------
for i in 0 1; do [ -c "$DIR/dev/gpu$i" ] || mknod "$DIR/dev/gpu$i" c 1 3; done
cat > "$DIR/etc/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.daemon.pid
SlurmdPidFile=$DIR/run/slurmd.daemon.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=256
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
DependencyParameters=kill_invalid_depend
MaxArraySize=1001
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=8 RealMemory=16000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
cat > "$DIR/etc/gres.conf" <<EOF
NodeName=$NODE Name=gpu File=$DIR/dev/gpu[0-1]
EOF
cat > "$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=seedgrid_slurm_acct_db
PidFile=$DIR/run/slurmdbd.daemon.pid
LogFile=$DIR/log/slurmdbd.log
EOF
chmod 600 "$DIR/etc/slurmdbd.conf"
echo "export SLURM_CONF=$SLURM_CONF" > "$DIR/env.sh"

# --- daemons, in dependency order --------------------------------------------------------------
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    [ -f /etc/munge/munge.key ] || { mungekey -c -k /etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; }
    start munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F
    wait_for 10 munged sh -c 'munge -n | unmunge'
fi
if [ ! -d "$DIR/mysql/mysql" ]; then
    mariadb-install-db --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
        --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1
fi
start mariadbd /usr/sbin/mariadbd --user=root --datadir="$DIR/mysql" --skip-networking \
    --socket=/run/mysqld/mysqld.sock --pid-file="$DIR/run/mariadbd.daemon.pid" \
    --log-error="$DIR/log/mariadb.log"
wait_for 30 mariadbd mariadb --socket=/run/mysqld/mysqld.sock -e 'select 1'
start slurmdbd /usr/sbin/slurmdbd -D
wait_for 30 slurmdbd sacctmgr -n show cluster
sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
start slurmctld /usr/sbin/slurmctld -D -i
wait_for 30 slurmctld scontrol ping
start slurmd /usr/sbin/slurmd -D -N "$NODE"
node_idle() { sinfo -h -N -n "$NODE" -o %t | grep -Eq '^(idle|mix|alloc)'; }
if ! wait_for 30 "node $NODE" node_idle; then
    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
    wait_for 15 "node $NODE" node_idle
fi
echo "slurm/start.sh: cluster $CLUSTER up, node $NODE idle (8 CPUs, 2 GPUs as GRES)."
echo "  clients need: export SLURM_CONF=$SLURM_CONF   (or: source $DIR/env.sh)"
