# shellcheck shell=bash
# What cluster/ray_head.wilkes3 and cluster/ray_worker.wilkes3 share: the environment, the nodes'
# CPUs and addresses, the port blocks, starting and stopping Ray on a node, and the head file.
# Sourced by both scripts (from $SLURM_SUBMIT_DIR/cluster/: submit from the repository root).
#
# The sourcing script sets JOB, SUBMIT_DIR, ROLE (head | worker), RAY_TMP_ROOT and a log()
# function; RAY_ADDRESS (the head's GCS) before non-head nodes start, and PORT_BASE (choose_ports).

TRIAL_SLOTS=1000  # seg_tune.tune.TRIAL_RESOURCE per node: a concurrency token, never the limit
EXIT_FINISHED=0 EXIT_FAILED=1 EXIT_BAD_INPUT=2 EXIT_STOPPED=3
RAY_PIDS=()

# ------------------------------------------------------------------------- environment
# The virtualenv, Ray on PATH, and a CUDA torch when the job holds GPUs (exits 1 or 2 if not).
activate_environment() {
    # Other clusters: `module purge; module load ...` here if your Python or CUDA come from modules.
    if [ -n "${SEG_TUNE_VENV:-}" ]; then
        # shellcheck disable=SC1091
        source "$SEG_TUNE_VENV/bin/activate" || { log "ERROR: cannot activate SEG_TUNE_VENV=$SEG_TUNE_VENV"; exit "$EXIT_FAILED"; }
    elif [ -f "$SUBMIT_DIR/.venv/bin/activate" ]; then
        # shellcheck disable=SC1091
        source "$SUBMIT_DIR/.venv/bin/activate"
    fi
    command -v ray >/dev/null || { log "ERROR: no 'ray' on PATH: run ./setup.sh or set SEG_TUNE_VENV"; exit "$EXIT_FAILED"; }
    export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1

    # A job that holds GPUs with a CPU build of torch (./setup.sh run on a login node without
    # nvidia-smi installs one) would train every trial on the CPU: refuse it at once instead.
    if [ -n "${SLURM_JOB_GPUS:-${SLURM_GPUS_ON_NODE:-}}" ] && [ "${SLURM_GPUS_ON_NODE:-1}" != "0" ]; then
        TORCH_CUDA=$(python -c 'import torch; print(torch.version.cuda or "")' 2>/dev/null) \
            || { log "ERROR: python cannot import torch: run ./setup.sh or set SEG_TUNE_VENV"; exit "$EXIT_FAILED"; }
        if [ -z "$TORCH_CUDA" ]; then
            log "ERROR: this job holds GPUs but torch $(python -c 'import torch; print(torch.__version__)') is a CPU build; install the CUDA build on a GPU node (srun --gres=gpu:1 --pty ./setup.sh, or TORCH_SPEC=torch ./setup.sh after removing .venv), or submit with --gres=none"
            exit "$EXIT_BAD_INPUT"
        fi
    fi
}

# ------------------------------------------------------------------------- nodes, ports, paths

mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
N_NODES=${#NODES[@]}
HEAD_NODE=${SLURMD_NODENAME:-${NODES[0]}}  # the batch script runs on the job's first node

# CPUs of node i, from SLURM_JOB_CPUS_PER_NODE ("128(x2),64" -> 128 128 64), in NODES order.
node_cpus() {
    local item count reps out=()
    IFS=',' read -ra items <<<"${SLURM_JOB_CPUS_PER_NODE:-${SLURM_CPUS_ON_NODE:-1}}"
    for item in "${items[@]}"; do
        count=${item%%(*}
        reps=1
        [[ $item == *"(x"* ]] && reps=${item##*(x} && reps=${reps%)}
        for ((; reps > 0; reps--)); do out+=("$count"); done
    done
    echo "${out[$1]:-${out[0]}}"
}

# This node's address that other nodes can reach (hostname's address, unless that is loopback).
node_ip() {
    local ip
    ip=$(hostname --ip-address 2>/dev/null | awk '{print $1}')
    [[ -z $ip || $ip == 127.* ]] && ip=$(hostname -I 2>/dev/null | awk '{print $1}')
    echo "${ip:-127.0.0.1}"
}

# Ports: one block of PORT_BLOCK per job, its slot derived from the job id (moved on when a port is
# taken), so that several jobs (and several nodes of one job on the same host) never collide.
#   +0 GCS, +1 Ray client server, +2 dashboard (head only)
#   +10+10i..+15+10i node i: node manager, object manager, dashboard agent http and grpc,
#                    metrics export, runtime-env agent  (nodes 0..15)
#   +200..+999      worker ports, split evenly among the nodes
PORT_LO=20000 PORT_BLOCK=1000 PORT_SLOTS=12 MAX_PORT_NODES=16
port_base_for() { echo $((PORT_LO + PORT_BLOCK * (($1) % PORT_SLOTS))); }

# Python run on every node (one srun): exit 1 if any port of the block is in use there.
PORT_PROBE='
import socket, sys
base, size = int(sys.argv[1]), int(sys.argv[2])
for port in range(base, base + size):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("0.0.0.0", port))
    except OSError:
        print(f"port {port} in use on {socket.gethostname()}")
        sys.exit(1)
    finally:
        s.close()
'

choose_ports() {
    local attempt base
    if [ -n "${SEG_TUNE_PORT_BASE:-}" ]; then
        PORT_BASE=$SEG_TUNE_PORT_BASE
        return 0
    fi
    for attempt in $(seq 0 $((PORT_SLOTS - 1))); do
        base=$(port_base_for "$JOB + $attempt")
        if srun --overlap --nodes="$N_NODES" --ntasks-per-node=1 --ntasks="$N_NODES" --cpus-per-task=1 \
            --mem=0 --kill-on-bad-exit=0 python -c "$PORT_PROBE" "$base" "$PORT_BLOCK" 2>&1; then
            PORT_BASE=$base
            return 0
        fi
    done
    return 1
}

# Ray's options for node i (head when i = 0).
ray_node_args() {
    local i=$1 per_node=$((800 / N_NODES)) ip=$2 cpus
    cpus=$(node_cpus "$i")
    local args=(--node-ip-address="$ip" --num-cpus="$cpus" --temp-dir="$(ray_tmp "$i")"
        --resources="{\"seg_tune_trial\": $TRIAL_SLOTS}" --disable-usage-stats --log-style=record)
    if [ "$i" -lt "$MAX_PORT_NODES" ]; then
        local p=$((PORT_BASE + 10 + 10 * i)) w=$((PORT_BASE + 200 + per_node * i))
        args+=(--node-manager-port="$p" --object-manager-port=$((p + 1))
            --dashboard-agent-listen-port=$((p + 2)) --dashboard-agent-grpc-port=$((p + 3))
            --metrics-export-port=$((p + 4)) --runtime-env-agent-port=$((p + 5))
            --min-worker-port="$w" --max-worker-port=$((w + per_node - 1)))
    fi  # beyond 16 nodes: Ray picks free ports itself
    # shellcheck disable=SC2206
    args+=(${SEG_TUNE_RAY_START_ARGS:-})
    printf '%s\n' "${args[@]}"
}

# Node-local temp dir of node i: short (unix socket paths <= 107 bytes), unique per job and node.
ray_tmp() { echo "$RAY_TMP_ROOT/ray_${JOB}_$1"; }

# Runs under srun on one node: start Ray there, block, and remove the temp dir afterwards. Its PID
# goes to <tmp>/wrapper.pid: teardown sends it SIGTERM (through a one-task srun), and it passes
# SIGTERM to `ray start --block`, which stops this node's Ray processes only. (Never `ray stop`: it
# kills every Ray of the user on the node. Never a signal to the srun step: srun forwards it to
# every process of the step at once, and SIGTERM makes srun SIGKILL the step.)
# shellcheck disable=SC2329  # runs through srun (declare -f)
ray_node_main() {
    local tmp=$1 pid rc stopping=0
    shift
    rm -rf "$tmp" && mkdir -p "$tmp" && echo $$ >"$tmp/wrapper.pid"
    trap 'stopping=1; kill -TERM $pid 2>/dev/null' TERM
    ray start --block "$@" &
    pid=$!
    while :; do
        wait "$pid"
        rc=$?
        kill -0 "$pid" 2>/dev/null || break
    done
    # A Ray process of this node may still write its last lines for a moment (seen once: "rm:
    # cannot remove .../session_...: Directory not empty"): try again for up to 10 s.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        rm -rf "$tmp" 2>/dev/null && break
        sleep 1
    done
    [ -e "$tmp" ] && rm -rf "$tmp"  # still there: say why
    [ "$stopping" -eq 1 ] && rc=0  # asked to stop: ray start's status 1 after SIGTERM is no error
    exit "$rc"
}

# Start Ray on node i in the background; its srun PID goes into RAY_PIDS.
start_ray_node() {
    local i=$1 node=${NODES[$1]} ip=$2 mode=() args=()
    mapfile -t args < <(ray_node_args "$i" "$ip")
    if [ "$ROLE" = head ] && [ "$i" -eq 0 ]; then
        mode=(--head --port="$GCS_PORT" --ray-client-server-port="$((PORT_BASE + 1))"
            --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT")
    else
        mode=(--address="$RAY_ADDRESS")
    fi
    srun --overlap --nodes=1 --ntasks=1 -w "$node" --cpus-per-task="$(node_cpus "$i")" --mem=0 \
        ${SLURM_GPUS_ON_NODE:+--gres=gpu:$SLURM_GPUS_ON_NODE} --kill-on-bad-exit=0 \
        bash -c "$(declare -f ray_node_main); ray_node_main \"\$@\"" ray_node \
        "$(ray_tmp "$i")" "${mode[@]}" "${args[@]}" &
    RAY_PIDS+=($!)
}

# The non-head nodes find their own address (run there through srun).
worker_ip() {
    srun --overlap --nodes=1 --ntasks=1 -w "$1" --cpus-per-task=1 --mem=0 \
        bash -c "$(declare -f node_ip); node_ip"
}

# ------------------------------------------------------------------------- Ray up and down

# Stop our own processes only (by PID): each node's wrapper gets SIGTERM, workers first, head
# last; a node's srun that is still there after 30 s is killed (SLURM then kills that step).
stop_ray_node() {
    local i=$1 pid=$2 deadline
    kill -0 "$pid" 2>/dev/null || return 0
    # shellcheck disable=SC2016  # $1 is expanded by that shell
    srun --overlap --nodes=1 --ntasks=1 -w "${NODES[$i]}" --cpus-per-task=1 --mem=0 \
        bash -c 'f=$1/wrapper.pid; [ -s "$f" ] && kill -TERM "$(cat "$f")"' stop "$(ray_tmp "$i")" 2>/dev/null
    deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
        log "Ray on ${NODES[$i]} did not stop within 30 s: killing its step"
        kill -KILL "$pid" 2>/dev/null
    fi
}

# Stop Ray on every node of this job that runs it (in parallel, last node first).
stop_ray_nodes() {
    local idx
    for ((idx = ${#RAY_PIDS[@]} - 1; idx >= 0; idx--)); do
        stop_ray_node "$idx" "${RAY_PIDS[$idx]}" &
    done
    wait_quietly
    RAY_PIDS=()
}

# `wait` for every background job, again when a trapped signal interrupts it.
wait_quietly() {
    local pid
    for pid in $(jobs -p); do
        while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done
    done
}

# Whether the GCS at HOST:PORT ($1, default RAY_ADDRESS) accepts a connection.
gcs_answers() {
    local address=${1:-$RAY_ADDRESS}
    python -c "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2).close()" \
        "${address%:*}" "${address##*:}" 2>/dev/null
}

# python -c "$NODES_PROBE" ADDRESS WANT DEADLINE_S [PORT_LO PORT_HI]: wait until WANT nodes are
# alive (only those whose node manager port is in PORT_LO..PORT_HI: one job's nodes); prints the
# count and the nodes' ids (one line) for the log.
NODES_PROBE='
import sys, time, ray
want, deadline = int(sys.argv[2]), time.time() + float(sys.argv[3])
ports = range(int(sys.argv[4]), int(sys.argv[5]) + 1) if len(sys.argv) > 5 else None
while True:  # on an overloaded node the head may not have registered yet: retry until the deadline
    try:
        ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
        break
    except Exception as exc:
        ray.shutdown()
        if time.time() > deadline:
            print(0, f"(could not connect: {type(exc).__name__}: {str(exc)[:200]})".replace("\n", " "))
            sys.exit(1)
        time.sleep(2)
while True:
    alive = [n for n in ray.nodes() if n["Alive"] and (ports is None or n["NodeManagerPort"] in ports)]
    if len(alive) >= want or time.time() > deadline:
        break
    time.sleep(1)
print(len(alive), " ".join(n["NodeID"] + "@" + n["NodeManagerAddress"] for n in alive))
sys.exit(0 if len(alive) >= want else 1)
'

# python -c "$NODES_LEAVE_PROBE" ADDRESS KEEP DEADLINE_S: wait until at most KEEP nodes are alive
# (the worker jobs' nodes have left); status 1 when some are still there at the deadline.
NODES_LEAVE_PROBE='
import sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
keep, deadline = int(sys.argv[2]), time.time() + float(sys.argv[3])
while sum(n["Alive"] for n in ray.nodes()) > keep:
    if time.time() > deadline:
        sys.exit(1)
    time.sleep(1)
'

# ------------------------------------------------------------------------- the head file
# $TOKEN_DIR/job-<head job id>.head tells worker jobs (cluster/ray_worker.wilkes3 --join) where
# the head job's Ray cluster is. It is the one place that says so: key=value lines, written
# atomically (a temp file renamed over it) at mode 0600 in the 0700 token folder, never sourced:
#   format=1             this layout (HEAD_FILE_FORMAT)
#   job=<id>             the head job
#   restart=<n>          its SLURM_RESTART_COUNT: a requeued head is a new cluster
#   state=up|down|ended  up: joinable at address; down: stopped for a requeue, back later;
#                        ended: the experiment will not go on (see ended=)
#   address=<ip:port>    the head's GCS
#   token_file=<path>    the cluster's token (its path only: the token is never copied)
#   head_node=<host>
#   since=<epoch s>      when this state was written
#   ended=finished|failed|bad_input|cancelled   (state=ended only)
HEAD_FILE_FORMAT=1

head_file_for() { echo "$TOKEN_DIR/job-$1.head"; }

# write_head_file STATE [ENDED]: this head job's head file (ROLE=head; RAY_ADDRESS, TOKEN_FILE).
write_head_file() {
    local file tmp
    file=$(head_file_for "$JOB")
    tmp="$file.tmp.$$"
    (
        umask 077
        printf 'format=%s\njob=%s\nrestart=%s\nstate=%s\naddress=%s\ntoken_file=%s\nhead_node=%s\nsince=%s\nended=%s\n' \
            "$HEAD_FILE_FORMAT" "$JOB" "$RESTART" "$1" "${RAY_ADDRESS:-}" "$TOKEN_FILE" \
            "${HEAD_NODE:-}" "$(date +%s)" "${2:-}" >"$tmp" && mv -f "$tmp" "$file"
    ) || { rm -f "$tmp"; log "WARNING: cannot write the head file $file: worker jobs will not find this cluster"; }
}

# read_head_file FILE: sets H_FORMAT H_JOB H_RESTART H_STATE H_ADDRESS H_TOKEN_FILE H_HEAD_NODE
# H_SINCE H_ENDED; status 1 when the file is missing or unreadable, 2 when its format is unknown.
read_head_file() {
    local key value
    H_FORMAT="" H_JOB="" H_RESTART="" H_STATE="" H_ADDRESS="" H_TOKEN_FILE="" H_HEAD_NODE="" H_SINCE="" H_ENDED=""
    [ -r "$1" ] || return 1
    while IFS='=' read -r key value; do
        case $key in
            format) H_FORMAT=$value ;; job) H_JOB=$value ;; restart) H_RESTART=$value ;;
            state) H_STATE=$value ;; address) H_ADDRESS=$value ;; token_file) H_TOKEN_FILE=$value ;;
            head_node) H_HEAD_NODE=$value ;; since) H_SINCE=$value ;; ended) H_ENDED=$value ;;
        esac
    done <"$1" || return 1
    [ -n "$H_FORMAT" ] || return 1
    [ "$H_FORMAT" = "$HEAD_FILE_FORMAT" ] || return 2
}
