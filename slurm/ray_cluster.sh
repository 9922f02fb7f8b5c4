#!/bin/bash
#SBATCH --job-name=fetalgan-sweep
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --signal=B:USR1@180
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
#
# Run a fetalgan sweep (Ray Tune) on a Slurm allocation: a Ray head on the first node, a
# Ray worker on every other node, and `fetalgan sweep SWEEP.yaml` as the driver.
#
#   sbatch [--nodes=N] [--gpus-per-node=G] [--cpus-per-task=C] [--time=HH:MM:SS] \
#          [--partition=P] [--account=A] slurm/ray_cluster.sh SWEEP.yaml [SWEEP OPTIONS]
#
# SWEEP OPTIONS go to `fetalgan sweep` unchanged (e.g. --set epochs=50). Run from the
# directory holding the data and configs: it is the working directory of every process.
# Near the time limit Slurm sends USR1: the sweep saves its state and the job requeues itself;
# a requeued or resubmitted job whose experiment directory exists resumes it (--resume).
# USR1 comes 180 s before the limit (--signal=B:USR1@180): Tune's save and Ray's drain take up
# to about 60 s, the clean-up of every node up to 60 s more. A sweep whose trials take longer
# to checkpoint needs a longer lead: `sbatch --signal=B:USR1@300 ...` (keep the `B:`: the
# signal must reach this script, which forwards it to the sweep).
#
# Environment read here (all optional):
#   FETALGAN_IMAGE       Apptainer image (.sif). When set, every ray and python command runs
#                        as `apptainer exec --nv --cleanenv --bind WORKDIR,STORAGE,DATA,... IMAGE
#                        CMD` (`singularity exec ...` where only singularity is on PATH). With
#                        --cleanenv the image sees only what is passed explicitly, through
#                        APPTAINERENV_NAME (SINGULARITYENV_NAME) variables exported here, never
#                        on a command line: every RAY_*, MLFLOW_* and FETALGAN_* variable (the
#                        Ray address and token, the tracking URI and its credentials),
#                        CUDA_VISIBLE_DEVICES (each node's own), SLURM_JOB_ID,
#                        SLURM_JOB_NODELIST, SLURMD_NODENAME and SLURM_RESTART_COUNT (the runs'
#                        tags). HOME is the runtime's own (it refuses an APPTAINERENV_HOME).
#   FETALGAN_VENV        Python environment with fetalgan installed, used when there is no
#                        image. Default: ./.venv if it has fetalgan, else `fetalgan` on PATH.
#   FETALGAN_STORAGE     Tune storage directory, used when the sweep file sets no `storage`;
#                        must be on a filesystem all nodes share. Default: ./ray_results.
#   MLFLOW_TRACKING_URI  Where runs are logged: an mlflow/server.sh URL (best for many nodes)
#                        or a store. Default: sqlite:///$PWD/mlruns.db.
#   FETALGAN_ARTIFACT_ROOT  With a tracking server: its --artifacts directory as the nodes see
#                        it (shared filesystem); artefacts are written there as files instead
#                        of uploaded through the server. Bound into the image when set.
#   FETALGAN_CACHE       Decoded-dataset cache directory; bound into the image when set.
#   FETALGAN_BIND        More paths to bind into the image, comma-separated.
#   FETALGAN_RAY_PORT    Port of the Ray head (GCS). Default: the first port of the job's block
#                        (below); a FETALGAN_RAY_PORT already in use on the head node stops the
#                        job at once.
#   FETALGAN_RAY_IFACE   Network interface whose address the Ray head advertises (e.g. ib0).
#                        Default: the interface that routes to the job's other nodes
#                        (`ip route get`), or the first of `hostname -I` on a one-node job.
#   FETALGAN_RAY_WAIT    Seconds to wait for every node to join Ray. Default 300.
#   FETALGAN_REQUEUE     1 (default): after USR1 has made the sweep save, requeue this job.
#                        0: stop there (resubmit the same command to resume).
#   SLURM_TMPDIR, TMPDIR The directory for the job's private token directory and each node's Ray
#                        temp dir: SLURM_TMPDIR if set, else TMPDIR, else /tmp; it must exist on
#                        every node (a per-job local directory that the site makes does). Ray's
#                        AF_UNIX socket paths under it must stay within 107 characters: when
#                        the directory's path is too long for that (or it is not a writable
#                        directory) the job says so and uses /tmp.
# Ray's ports: Ray's defaults (6379, 52365, 10001, ...) are fixed, so two jobs sharing a node
# (Slurm allocating by CPU, e.g. select/cons_tres with CR_CPU) would collide. Each job takes
# a block of 512 TCP ports in 20000-32287 (below Linux's default ephemeral range, 32768-60999):
# block number SLURM_JOB_ID mod 24, or the next block none of whose ports is listened on on
# the node (/proc/net/tcp, tcp6, as `ss -tln` shows; a closed connection lingering in
# TIME_WAIT does not stop Ray binding there). Block base B:
# B the GCS (--port), B+1 the Ray Client server (when the image or venv has grpc installed,
# i.e. Ray Client; else Ray starts none), B+2 --node-manager-port, B+3 --object-manager-port,
# B+4 --dashboard-agent-listen-port, B+5 --dashboard-agent-grpc-port, B+6
# --runtime-env-agent-port, B+7 --metrics-export-port, B+8 --dashboard-port, B+16 to B+511
# the worker ports (--min-worker-port, --max-worker-port: 496 Ray worker processes per node at
# most). Every other node checks the same block on itself and moves on to the next free one
# there. The head advertises --node-ip-address (below); the other nodes let Ray pick theirs
# (the address that routes to the head). The job logs its ports in one line. On the head's
# node the choice is serialised: a job holds a lock (flock on /tmp/fetalgan-ray-ports, a
# directory any user can open) from choosing its block until its Ray is up, so two jobs
# started there at once take different blocks (seen without it: both took the same block and
# the second head met the first's token). Left open: the worker nodes of two multi-node jobs
# choose without that lock, so two such jobs starting the same seconds may pick one block on
# a shared worker node.
# Exported here for `fetalgan sweep` and the Ray nodes: RAY_ADDRESS (the head's IP:port),
# MLFLOW_TRACKING_URI, and Ray token authentication: RAY_AUTH_MODE=token with RAY_AUTH_TOKEN,
# a random token made per job and kept in a private directory (mktemp, mode 0700) removed at
# the end; every srun step gets it through the environment (never on a command line), so a
# client without it (anyone else on the cluster network) is refused by the head.
# Each node's Ray temp dir lies in a directory of an unguessable name (mktemp's), created
# exclusively with mode 0700 on that node (Ray makes its own temp dir world-writable), and
# removed on every node when the job ends.
# Set by Slurm: SLURM_JOB_ID, SLURM_JOB_NODELIST, SLURM_JOB_NUM_NODES, SLURMD_NODENAME,
# SLURM_CPUS_PER_TASK, SLURM_RESTART_COUNT (how often this job was requeued: logged, and
# passed to the image), and whichever of SLURM_GPUS_ON_NODE, SLURM_JOB_GPUS,
# SLURM_GPUS_PER_NODE, SLURM_GPUS, SLURM_GPUS_PER_TASK the job's GPU request sets; in each
# step SLURMD_NODENAME, SLURM_CPUS_PER_TASK and CUDA_VISIBLE_DEVICES (the node's GPUs).
set -euo pipefail

die() { echo "ray_cluster.sh: error: $*" >&2; exit 2; }
log() { echo "ray_cluster.sh: $(date +%T) $*"; }

[[ $# -ge 1 ]] || die "no sweep file; usage: sbatch slurm/ray_cluster.sh SWEEP.yaml [SWEEP OPTIONS]"
SWEEP=$1
shift
[[ -f $SWEEP ]] || die "sweep file '$SWEEP' not found (relative to $PWD)"
[[ -n ${SLURM_JOB_ID:-} && -n ${SLURMD_NODENAME:-} ]] ||
    die "not inside a Slurm batch job; submit it with: sbatch slurm/ray_cluster.sh $SWEEP"

export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$PWD/mlruns.db}
CPUS=${SLURM_CPUS_PER_TASK:-1}
RESTARTS=${SLURM_RESTART_COUNT:-0}
((RESTARTS > 0)) && log "restart $RESTARTS of this job ($SLURM_JOB_ID)"
# Each Ray node is one srun step with the job's CPUs (since Slurm 22.05 srun no longer takes
# --cpus-per-task from the job) and the job's GPUs on that node, which Slurm lists in the
# step's CUDA_VISIBLE_DEVICES and Ray counts from there: nodes may differ. A job without GPUs
# gives Ray none (--num-gpus=0), so a node's GPUs outside the allocation are never used.
STEP_OPTIONS=(--nodes=1 --ntasks=1 --cpus-per-task="$CPUS")
RAY_GPUS=(--num-gpus=0)
GPU_NOTE="no GPUs (the job has none)"
if [[ ${SLURM_GPUS_ON_NODE:-0} != 0 || -n ${SLURM_JOB_GPUS:-}${SLURM_GPUS_PER_NODE:-}${SLURM_GPUS:-}${SLURM_GPUS_PER_TASK:-} ]]; then
    RAY_GPUS=()
    GPU_NOTE="each node's GPUs as its step sees them"
    [[ -n ${SLURM_GPUS_PER_NODE:-} ]] && STEP_OPTIONS+=(--gpus-per-node="$SLURM_GPUS_PER_NODE")
    # --gpus and --gpus-per-task count for the whole job: srun would read them as a one-node
    # step's request. Without them a step gets all of the job's GPUs on its node.
    unset SLURM_GPUS SLURM_GPUS_PER_TASK
fi

# Shell functions this script and each node's step (below) share.
read -r -d '' SHARED <<'EOF' || true
PORT_LO=20000 PORT_BLOCK=512 PORT_BLOCKS=24
ports_taken() { # ports_taken LO HI: true when a TCP port in LO..HI is listened on here
    local tables=() table
    for table in /proc/net/tcp /proc/net/tcp6; do [[ -r $table ]] && tables+=("$table"); done
    ((${#tables[@]})) || return 1
    awk -v lo="$1" -v hi="$2" '
        function hex(s,  i, n) { for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789ABCDEF", substr(s, i, 1)) - 1; return n }
        FNR > 1 && $4 == "0A" { n = split($2, a, ":"); p = hex(a[n]); if (p >= lo && p <= hi) { found = 1; exit } }
        END { exit !found }' "${tables[@]}"
}
free_block() { # free_block N: the first block from N on (wrapping) with every port unused here
    local i block lo
    for ((i = 0; i < PORT_BLOCKS; i++)); do
        block=$(((${1} + i) % PORT_BLOCKS))
        lo=$((PORT_LO + block * PORT_BLOCK))
        ports_taken "$lo" $((lo + PORT_BLOCK - 1)) || { echo "$block"; return 0; }
    done
    return 1
}
node_ports() { # node_ports BLOCK: NODE_PORTS, a Ray node's own ports in that block
    local b=$((PORT_LO + $1 * PORT_BLOCK))
    NODE_PORTS=(--node-manager-port=$((b + 2)) --object-manager-port=$((b + 3))
        --dashboard-agent-listen-port=$((b + 4)) --dashboard-agent-grpc-port=$((b + 5))
        --runtime-env-agent-port=$((b + 6)) --metrics-export-port=$((b + 7))
        --min-worker-port=$((b + 16)) --max-worker-port=$((b + PORT_BLOCK - 1)))
}
PASS_ENV='^((RAY|MLFLOW|FETALGAN)_[A-Za-z0-9_]+|CUDA_VISIBLE_DEVICES|SLURM_JOB_ID|SLURM_JOB_NODELIST|SLURMD_NODENAME|SLURM_RESTART_COUNT)$'
container_env() { # with an image: export PREFIX+NAME for each variable it gets (--cleanenv)
    [[ -n ${CONTAINER_ENV:-} ]] || return 0
    local name
    for name in $(compgen -e); do # drop what an earlier call passed and is gone since
        [[ $name == "$CONTAINER_ENV"* && ${name#"$CONTAINER_ENV"} =~ $PASS_ENV ]] && unset "$name"
    done
    for name in $(compgen -e); do
        [[ $name =~ $PASS_ENV ]] && export "$CONTAINER_ENV$name=${!name}"
    done
    return 0
}
EOF
eval "$SHARED"

# RUN: the prefix of every ray and python command (empty, or apptainer exec ... IMAGE).
# CONTAINER_ENV: the prefix that passes a variable into the image (see container_env).
CONTAINER=
CONTAINER_ENV=
BINDS=()
bind() { # bind PATH...: add each path not already inside a bound directory
    local path bound
    for path in "$@"; do
        [[ -n $path ]] || continue
        path=$(realpath -sm -- "$path")
        for bound in "${BINDS[@]}"; do [[ $path == "$bound" || $path == "$bound"/* ]] && continue 2; done
        BINDS+=("$path")
    done
}
set_run() {
    RUN=()
    [[ -n ${FETALGAN_IMAGE:-} ]] || return 0
    local IFS=,
    RUN=("$CONTAINER" exec --nv --cleanenv --bind "${BINDS[*]}" "$FETALGAN_IMAGE")
}
if [[ -n ${FETALGAN_IMAGE:-} ]]; then
    [[ -f $FETALGAN_IMAGE ]] || die "FETALGAN_IMAGE=$FETALGAN_IMAGE: no such image file"
    if command -v apptainer >/dev/null; then
        CONTAINER=apptainer CONTAINER_ENV=APPTAINERENV_
    elif command -v singularity >/dev/null; then
        CONTAINER=singularity CONTAINER_ENV=SINGULARITYENV_
    else
        die "FETALGAN_IMAGE is set but neither apptainer nor singularity is on PATH"
    fi
    [[ -n ${FETALGAN_STORAGE:-} ]] && mkdir -p "$FETALGAN_STORAGE"
    IFS=, read -ra extra_binds <<<"${FETALGAN_BIND:-}"
    sqlite_db=
    [[ $MLFLOW_TRACKING_URI == sqlite:///* ]] && sqlite_db=$(dirname -- "${MLFLOW_TRACKING_URI#sqlite:///}")
    bind "$PWD" "$(dirname -- "$SWEEP")" "${FETALGAN_STORAGE:-}" "${FETALGAN_CACHE:-}" "${FETALGAN_ARTIFACT_ROOT:-}" "$sqlite_db" "${extra_binds[@]}"
else
    VENV=${FETALGAN_VENV:-}
    [[ -z $VENV && -x .venv/bin/fetalgan ]] && VENV=$PWD/.venv
    if [[ -n $VENV ]]; then
        [[ -x $VENV/bin/fetalgan ]] || die "FETALGAN_VENV=$VENV has no bin/fetalgan"
        export PATH=$VENV/bin:$PATH
    fi
    command -v fetalgan >/dev/null || die "fetalgan not found: set FETALGAN_VENV or FETALGAN_IMAGE"
fi
set_run

# The experiment's name, storage and data root, from the sweep file and the sweep options
# --set/--storage (also validates them, with the loader `fetalgan sweep` uses).
read -r -d '' READ_SWEEP <<'EOF' || true
import argparse, os, sys
from fetalgan.config import load_sweep
from fetalgan.sweep.experiment import storage_root
options = argparse.ArgumentParser(add_help=False)
options.add_argument("--set", action="append", default=[])
options.add_argument("--storage")
known, _ = options.parse_known_args(sys.argv[2:])
try:
    cfg = load_sweep(sys.argv[1], known.set)
except (ValueError, FileNotFoundError) as err:
    sys.exit(f"ray_cluster.sh: error: {err}")
print(cfg.name)
print(storage_root(cfg, known.storage))
print(os.path.abspath(cfg.base.data.root) if cfg.base.data.root else "")
import importlib.util  # Ray Client (its server needs grpc): "ray start" refuses its port without
print(int(importlib.util.find_spec("grpc") is not None))
EOF
container_env
info=$("${RUN[@]}" python -c "$READ_SWEEP" "$SWEEP" "$@") || exit 2
mapfile -t info <<<"$info"
NAME=${info[0]} STORAGE=${info[1]} DATA_ROOT=${info[2]:-} RAY_CLIENT=${info[3]:-0}
mkdir -p "$STORAGE"
bind "$STORAGE" "$DATA_ROOT"
set_run
RESUME=()
if [[ -e $STORAGE/$NAME/tuner.pkl ]]; then
    RESUME=(--resume)
    log "experiment $STORAGE/$NAME exists: resuming it"
fi

# Ray: one blocking `ray start` per node, each an srun step; killing the steps ends Ray.
STEP_PIDS=()
DRIVER_PID=
PRIVATE=
RAY_TMP=
cleanup() {
    trap - EXIT USR1 TERM
    # (|| true: under set -e a step already gone, as after a failed head, ended the clean-up
    # here and left the token directory behind)
    [[ -n $DRIVER_PID ]] && { kill -TERM "$DRIVER_PID" 2>/dev/null || true; }
    ((${#STEP_PIDS[@]})) && { kill -TERM "${STEP_PIDS[@]}" 2>/dev/null || true; }
    wait 2>/dev/null
    # Slurm ends a killed step with SIGKILL: the Ray temp dirs go in one more step per node.
    [[ -n $RAY_TMP ]] && timeout 60 srun --export=ALL --nodes="${SLURM_JOB_NUM_NODES:-1}" \
        --ntasks-per-node=1 bash -c 'rm -rf -- "$1"-*' rm-ray "$RAY_TMP" 2>/dev/null || true
    [[ -n $PRIVATE ]] && rm -rf -- "$PRIVATE"
    return 0
}
trap cleanup EXIT
INTERRUPTED=
# shellcheck disable=SC2317  # invoked by the traps below
forward() { # USR1 (time limit near) or TERM (scancel): let Tune save the experiment
    INTERRUPTED=$1
    log "got SIG$1: asking the sweep to save and stop"
    [[ -n $DRIVER_PID ]] && kill -USR1 "$DRIVER_PID" 2>/dev/null
    return 0
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM

mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
HEAD=$SLURMD_NODENAME # the batch script runs on the first node: the head lives here

# The temp dirs: under SLURM_TMPDIR or TMPDIR when set. Each node's Ray temp dir is
# TMP_ROOT/ray-JOBID.RANDOM-N/r (N: the node's place in the job); Ray's longest AF_UNIX socket
# path below it, /session_YYYY-MM-DD_HH-MM-SS_FFFFFF_PID/sockets/plasma_store, takes up to 64
# characters (a 7-digit PID), and an AF_UNIX path at most 107: the temp dir at most 43.
TMP_ROOT=${SLURM_TMPDIR:-${TMPDIR:-/tmp}}
[[ $TMP_ROOT == / ]] || TMP_ROOT=${TMP_ROOT%/}
LAST_NODE=$((${#NODES[@]} - 1))
ray_tmp_length() { echo $((${#1} + 5 + ${#SLURM_JOB_ID} + 11 + 1 + ${#LAST_NODE} + 2)); } # ROOT/ray-ID.RANDOM-N/r
if [[ $TMP_ROOT != /tmp ]]; then
    if [[ ! -d $TMP_ROOT || ! -w $TMP_ROOT ]]; then
        log "temp dir $TMP_ROOT (SLURM_TMPDIR or TMPDIR) is not a writable directory: using /tmp"
        TMP_ROOT=/tmp
    elif (($(ray_tmp_length "$TMP_ROOT") > 43)); then
        log "temp dir $TMP_ROOT (SLURM_TMPDIR or TMPDIR) is too long for Ray's sockets (a Ray temp dir there would take $(ray_tmp_length "$TMP_ROOT") characters, at most 43): using /tmp"
        TMP_ROOT=/tmp
    fi
fi
[[ $TMP_ROOT == /tmp ]] || bind "$TMP_ROOT" # Apptainer binds /tmp by itself
set_run

# Token authentication: a random token per job, in a directory only this user can read.
PRIVATE=$(mktemp -d "$TMP_ROOT/fetalgan-$SLURM_JOB_ID.XXXXXX") # mktemp -d: mode 0700
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$PRIVATE/ray_token")
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$(<"$PRIVATE/ray_token")
export RAY_AUTH_TOKEN
unset RAY_AUTH_TOKEN_PATH # RAY_AUTH_TOKEN is the one token every node and client uses

head_ip() { # the head's address on the network the other nodes reach
    local node peer
    if [[ -n ${FETALGAN_RAY_IFACE:-} ]]; then
        ip -o -4 addr show dev "$FETALGAN_RAY_IFACE" 2>/dev/null | awk '{sub(/\/.*/, "", $4); print $4; exit}'
        return 0
    fi
    for node in "${NODES[@]}"; do
        [[ $node == "$HEAD" ]] && continue
        peer=$(scontrol -o show node "$node" | grep -o 'NodeAddr=[^ ]*' | cut -d= -f2)
        peer=$(getent ahostsv4 "$peer" | awk '{print $1; exit}') # a name -> its IPv4 address
        [[ -n $peer ]] || continue
        ip -o route get "$peer" | grep -o 'src [0-9.]*' | cut -d' ' -f2
        return 0
    done
    hostname -I | awk '{print $1}'
}
HEAD_IP=$(head_ip)
[[ -n $HEAD_IP ]] || die "no IPv4 address for the Ray head${FETALGAN_RAY_IFACE:+ on interface $FETALGAN_RAY_IFACE (FETALGAN_RAY_IFACE)}"

# The job's ports (see the top): its block by job id, or the next one free on this node.
# Two jobs starting here at once would both see a block free before either Ray listens on it:
# the choice is serialised on the node (flock on a shared directory, which any user can open)
# and the lock is held until this job's Ray is up.
PORT_LOCK_DIR=/tmp/fetalgan-ray-ports
PORT_LOCK_FD= # 8 while held; every step started meanwhile closes it (8<&-), or it keeps the lock
if command -v flock >/dev/null && { [[ -d $PORT_LOCK_DIR ]] || mkdir -m 1777 -p "$PORT_LOCK_DIR" 2>/dev/null; } &&
    exec 8<"$PORT_LOCK_DIR"; then
    PORT_LOCK_FD=8
    flock -w "${FETALGAN_RAY_WAIT:-300}" 8 ||
        log "waited ${FETALGAN_RAY_WAIT:-300} s for another job on $HEAD to start its Ray; choosing ports anyway"
else
    log "no flock or $PORT_LOCK_DIR: ports chosen without a node-wide lock"
fi
JOB_NUMBER=${SLURM_JOB_ID//[^0-9]/}
JOB_BLOCK=$((10#${JOB_NUMBER:-0} % PORT_BLOCKS))
BLOCK=$(free_block "$JOB_BLOCK") ||
    die "every block of Ray ports ($PORT_LO-$((PORT_LO + PORT_BLOCKS * PORT_BLOCK - 1))) has a port in use on $HEAD"
BASE=$((PORT_LO + BLOCK * PORT_BLOCK))
RAY_PORT=$BASE
if [[ -n ${FETALGAN_RAY_PORT:-} ]]; then
    [[ $FETALGAN_RAY_PORT =~ ^[0-9]+$ ]] && ((FETALGAN_RAY_PORT >= 1024 && FETALGAN_RAY_PORT <= 65535)) ||
        die "FETALGAN_RAY_PORT=$FETALGAN_RAY_PORT is not a port number (1024-65535)"
    RAY_PORT=$FETALGAN_RAY_PORT
    ! ports_taken "$RAY_PORT" "$RAY_PORT" || die "FETALGAN_RAY_PORT=$RAY_PORT is in use on $HEAD"
fi
HEAD_PORTS=(--port="$RAY_PORT" --dashboard-port=$((BASE + 8)))
CLIENT_NOTE="no Ray Client server (grpc not installed)"
if [[ $RAY_CLIENT == 1 ]]; then
    HEAD_PORTS+=(--ray-client-server-port=$((BASE + 1)))
    CLIENT_NOTE="Ray Client $((BASE + 1))"
fi
node_ports "$BLOCK"
PORT_NOTE="block $BLOCK"
((BLOCK == JOB_BLOCK)) || PORT_NOTE="block $BLOCK (block $JOB_BLOCK has ports in use)"
log "job $SLURM_JOB_ID, restart $RESTARTS: Ray ports $BASE-$((BASE + PORT_BLOCK - 1)) on $HEAD, $PORT_NOTE: GCS $RAY_PORT, $CLIENT_NOTE, dashboard $((BASE + 8)), ${NODE_PORTS[*]//--/}"
export RAY_ADDRESS=$HEAD_IP:$RAY_PORT
container_env # the Ray address and token, for the image

# One Ray node per step, its temp dir in RAY_TMP-N (N: the node's place in the job): short
# (see TMP_ROOT above), random, made by mkdir on the node (which fails if it exists). The
# step takes the node's own ports from the job's block, or the next block free on that node.
RAY_TMP=$TMP_ROOT/ray-$SLURM_JOB_ID.$(mktemp -u XXXXXXXXXX)
read -r -d '' NODE_STEP <<'EOF' || true
mkdir -m 700 -- "$1" || exit 1
tmp=$1 block=$2 CONTAINER_ENV=$3
shift 3
trap 'rm -rf -- "$tmp"' EXIT
trap 'exit 143' TERM INT
node=${SLURMD_NODENAME:-$(hostname -s)}
free=$(free_block "$block") || { echo "ray_cluster.sh: error: node $node: every block of Ray ports has a port in use" >&2; exit 1; }
node_ports "$free"
note=
[[ $free == "$block" ]] || note=" (block $block has ports in use here)"
container_env # this step's CUDA_VISIBLE_DEVICES, for the image
gpus=$(tr ',' '\n' <<<"${CUDA_VISIBLE_DEVICES:-}" | grep -c . || true)
echo "ray_cluster.sh: node $node offers Ray ${SLURM_CPUS_PER_TASK:-?} CPUs and $gpus GPUs (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-}); its Ray ports: block $free$note"
"$@" "${NODE_PORTS[@]}" --temp-dir="$tmp/r"
EOF
NODE_STEP=$SHARED$'\n'$NODE_STEP
ray_step() { # ray_step NODE RAY-START-OPTIONS...: a blocking Ray node as one Slurm step
    local node=$1
    shift
    srun --export=ALL "${STEP_OPTIONS[@]}" -w "$node" bash -c "$NODE_STEP" ray-node "$RAY_TMP-${#STEP_PIDS[@]}" \
        "$BLOCK" "$CONTAINER_ENV" "${RUN[@]}" ray start --block --num-cpus="$CPUS" "${RAY_GPUS[@]}" --disable-usage-stats "$@" 8<&- &
    STEP_PIDS+=($!)
}
log "Ray head on $HEAD ($RAY_ADDRESS); $CPUS CPUs per node, $GPU_NOTE; token authentication on"
ray_step "$HEAD" --head --node-ip-address="$HEAD_IP" "${HEAD_PORTS[@]}" --include-dashboard=false
HEAD_PID=${STEP_PIDS[0]}
for node in "${NODES[@]}"; do
    [[ $node == "$HEAD" ]] || ray_step "$node" --address="$RAY_ADDRESS"
done

# Wait for every node to join. `ray status` hangs if the head is gone: bound it with timeout.
deadline=$((SECONDS + ${FETALGAN_RAY_WAIT:-300}))
while :; do
    kill -0 "$HEAD_PID" 2>/dev/null || die "the Ray head on $HEAD exited; see its output above"
    joined=$(timeout 10 "${RUN[@]}" ray status --address="$RAY_ADDRESS" 2>/dev/null 8<&- |
        grep -c '^ *1 node_' || true)
    ((joined >= ${#NODES[@]})) && break
    ((SECONDS < deadline)) || die "only $joined of ${#NODES[@]} nodes joined Ray in ${FETALGAN_RAY_WAIT:-300} s"
    sleep 2
done
log "Ray cluster up: $joined nodes (${NODES[*]})"
[[ -n $PORT_LOCK_FD ]] && exec 8<&- # the next job on this node may choose now

# The driver runs here, in the background, so the traps above can forward signals to it.
status=0
if [[ -z $INTERRUPTED ]]; then # a signal during start-up: nothing to save, go to the end
    "${RUN[@]}" fetalgan sweep "$SWEEP" --storage "$STORAGE" "${RESUME[@]}" "$@" &
    DRIVER_PID=$!
    wait "$DRIVER_PID" || status=$?
    while ((status > 128)) && kill -0 "$DRIVER_PID" 2>/dev/null; do # a trap interrupted wait
        status=0
        wait "$DRIVER_PID" || status=$?
    done
    DRIVER_PID=
    log "sweep exited with status $status"
fi

if [[ -n $INTERRUPTED ]]; then
    if [[ $INTERRUPTED == USR1 && ${FETALGAN_REQUEUE:-1} == 1 ]]; then
        cleanup # Ray first: a requeue would leave its steps to Slurm's slower KillWait
        log "requeueing job $SLURM_JOB_ID to resume $STORAGE/$NAME"
        scontrol requeue "$SLURM_JOB_ID" || log "requeue refused: resubmit the same command to resume"
    else
        log "interrupted: state saved in $STORAGE/$NAME; resubmit the same command to resume"
    fi
    exit 3
fi
exit "$status"
