#!/usr/bin/env bash
# A real SLURM (slurmctld + 2 slurmd + munge) on loopback, for tests that submit real sbatch jobs.
#
#   .ci/slurm.sh start [DIR]   install the packages if missing, write the config, start the daemons,
#                              wait until nodes n1 and n2 are idle (idempotent: start twice is fine)
#   .ci/slurm.sh env   [DIR]   print `export SLURM_CONF=DIR/slurm.conf` (eval it in your shell)
#   .ci/slurm.sh stop  [DIR]   cancel this cluster's jobs, stop the daemons by the PIDs in their pid
#                              files (never by name) and wait until they have exited
#   .ci/slurm.sh status [DIR]  print the daemons' PIDs and `sinfo`
#
# DIR (default .ci/slurm-state, git-ignored) holds everything: slurm.conf, munge key and socket,
# state, spool, logs and pid files. Must run as root (apt-get, daemons running as root).
# Nodes n1 and n2 both listen on 127.0.0.1 with their own ports and advertise SLURM_CI_CPUS CPUs
# each (default 8, more than the machine has: SlurmdParameters=config_overrides), so Ray gets a
# few CPUs per job. Ports: SLURM_CI_PORT (default 16817) for slurmctld, +1 and +2 for n1 and n2.
# SLURM_CI_NODES (default "n1 n2") names the nodes: bench/many_trials.py starts a 3-node one
# in its own DIR and ports (SLURM_CI_NODES="n1 n2 n3"); the tests use the default.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CMD=${1:-}
DIR=${2:-$REPO/.ci/slurm-state}
read -r -a NODES <<<"${SLURM_CI_NODES:-n1 n2}"  # more for a bench: SLURM_CI_NODES='n1 n2 n3'
CPUS=${SLURM_CI_CPUS:-8}
PORT=${SLURM_CI_PORT:-16817}
PARTITION=ampere
START_TIMEOUT_S=60
STOP_TIMEOUT_S=30

die() { echo "slurm.sh: $*" >&2; exit 1; }
log() { echo "slurm.sh: $*" >&2; }

abs_dir() {
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    CONF=$DIR/slurm.conf
    MUNGE_DIR=$DIR/munge
    SOCKET=$MUNGE_DIR/munge.socket
    # Clients (sinfo, sbatch, scontrol) read the config named here; jobs inherit it.
    export SLURM_CONF=$CONF
}

install_packages() {
    local missing=()
    for cmd in slurmctld slurmd sbatch munged; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; run as root to install slurm and munge"
    log "installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
    # Package scripts must not start system-wide daemons: policy-rc.d exit 101 forbids it.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    local pkgs=(slurmctld slurmd slurm-client munge) rc=0
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null; } \
        || rc=$?
    [ "$made_policy" -eq 1 ] && rm -f "$policy"
    [ "$rc" -eq 0 ] || die "apt-get install ${pkgs[*]} failed (exit $rc)"
}

write_config() {
    mkdir -p "$DIR/state" "$DIR/log"
    local node i=1 tmp
    for node in "${NODES[@]}"; do mkdir -p "$DIR/spool/$node"; done
    tmp=$(mktemp "$CONF.XXXXXX")
    {
        cat <<EOF
# Written by .ci/slurm.sh: a test cluster on loopback. Do not edit (rewritten on start).
ClusterName=ci
SlurmctldHost=localhost
SlurmctldPort=$PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1
SlurmdParameters=config_overrides
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=5
OverTimeLimit=0
MinJobAge=300
InactiveLimit=0
EOF
        for node in "${NODES[@]}"; do
            echo "NodeName=$node NodeAddr=127.0.0.1 Port=$((PORT + i)) CPUs=$CPUS RealMemory=8000 State=UNKNOWN"
            i=$((i + 1))
        done
        echo "PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
    } >"$tmp"
    mv "$tmp" "$CONF"
    chmod 644 "$CONF"
}

# Print the PID from FILE if that process is alive, else nothing.
live_pid() {
    local pid
    [ -s "$1" ] || return 0
    pid=$(tr -dc '0-9' <"$1")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
    return 0
}

pid_files() {
    local node
    for node in "${NODES[@]}"; do echo "$DIR/slurmd-$node.pid"; done
    echo "$DIR/slurmctld.pid"
    echo "$MUNGE_DIR/munged.pid"
}

start_munge() {
    [ -n "$(live_pid "$MUNGE_DIR/munged.pid")" ] && return 0
    # The socket directory must be 0755 (0700: "Socket is inaccessible"); key 0400 owned by munge.
    install -d -m 0755 -o munge -g munge "$MUNGE_DIR"
    if [ ! -s "$MUNGE_DIR/munge.key" ]; then
        head -c 1024 /dev/urandom >"$MUNGE_DIR/munge.key"
    fi
    chown munge:munge "$MUNGE_DIR/munge.key"
    chmod 0400 "$MUNGE_DIR/munge.key"
    rm -f "$SOCKET" "$SOCKET.lock"
    runuser -u munge -- munged --socket="$SOCKET" --key-file="$MUNGE_DIR/munge.key" \
        --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed"
    munge -n --socket="$SOCKET" | unmunge --socket="$SOCKET" >/dev/null \
        || die "munge self-test failed (see $MUNGE_DIR/munged.log)"
}

start_slurm() {
    local node
    if [ -z "$(live_pid "$DIR/slurmctld.pid")" ]; then
        slurmctld -f "$CONF" || die "slurmctld failed to start (see $DIR/log/slurmctld.log)"
    fi
    for node in "${NODES[@]}"; do
        if [ -z "$(live_pid "$DIR/slurmd-$node.pid")" ]; then
            slurmd -f "$CONF" -N "$node" || die "slurmd $node failed (see $DIR/log/slurmd-$node.log)"
        fi
    done
}

# Wait until every node is idle (or busy with jobs: a restart with jobs running); resume down ones.
wait_idle() {
    local deadline=$((SECONDS + START_TIMEOUT_S)) line node state ready
    while :; do
        ready=0
        while read -r node state; do
            case $state in
                idle | mixed | allocated | completing) ready=$((ready + 1)) ;;
                down* | drain* | fail*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
            esac
        done < <(sinfo -h -N -o '%N %T' 2>/dev/null || true)
        [ "$ready" -eq ${#NODES[@]} ] && return 0
        if [ "$SECONDS" -ge "$deadline" ]; then
            line=$(sinfo -h -N -o '%N %T' 2>&1 | tr '\n' ' ')
            die "nodes not idle after ${START_TIMEOUT_S}s: $line (logs in $DIR/log)"
        fi
        sleep 0.2
    done
}

cmd_start() {
    install_packages
    abs_dir
    write_config
    start_munge
    start_slurm
    wait_idle
    log "up: ${NODES[*]} in partition $PARTITION; $(cmd_env)"
}

# Cancel this cluster's jobs (by id, through this cluster's config) so no slurmstepd outlives it.
cancel_jobs() {
    local ids deadline=$((SECONDS + STOP_TIMEOUT_S))
    ids=$(squeue -h -o '%i' 2>/dev/null | tr '\n' ' ') || return 0
    [ -z "${ids// /}" ] && return 0
    # shellcheck disable=SC2086
    scancel $ids 2>/dev/null || true
    while [ -n "$(squeue -h -o '%i' 2>/dev/null)" ] && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.5
    done
}

stop_pid_file() {
    local file=$1 pid deadline=$((SECONDS + STOP_TIMEOUT_S))
    pid=$(live_pid "$file")
    [ -z "$pid" ] && return 0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "pid $pid ($file) ignored SIGTERM for ${STOP_TIMEOUT_S}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 5))
        fi
        sleep 0.1
    done
}

cmd_stop() {
    abs_dir
    local file
    if [ -n "$(live_pid "$DIR/slurmctld.pid")" ]; then cancel_jobs; fi
    while read -r file; do stop_pid_file "$file"; done < <(pid_files)
    log "stopped"
}

cmd_env() {
    abs_dir
    echo "export SLURM_CONF=$CONF"
}

cmd_status() {
    abs_dir
    local file
    while read -r file; do echo "$(basename "$file" .pid): $(live_pid "$file")"; done < <(pid_files)
    sinfo -N 2>&1 || true
}

case $CMD in
    start) cmd_start ;;
    stop) cmd_stop ;;
    env) cmd_env ;;
    status) cmd_status ;;
    *) die "usage: $0 start|stop|env|status [DIR] (DIR defaults to .ci/slurm-state)" ;;
esac
