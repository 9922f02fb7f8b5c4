#!/bin/bash
# MLflow tracking server for fetalgan sweeps on a cluster: run it on the login or head node,
# point every job at it (MLFLOW_TRACKING_URI), open the UI through an SSH tunnel.
#
#   mlflow/server.sh [--host ADDR] [--port N] [--dir DIR] [--backend-store-uri URI]
#                    [--artifacts DIR] [--auth] [--allowed-hosts LIST]
#
#   --host ADDR     interface to bind (default 127.0.0.1: this machine only; 0.0.0.0 lets
#                   compute nodes reach it, so use --auth there on a shared cluster: without
#                   it a non-loopback --host prints a warning)
#   --port N        default 5000
#   --dir DIR       server state: mlruns.db, mlartifacts/, auth files (default ./mlflow_server)
#   --backend-store-uri URI
#                   runs database (default sqlite:///DIR/mlruns.db); for many concurrent
#                   writers use PostgreSQL: postgresql://USER:PASS@HOST:5432/DB
#   --artifacts DIR artefact root on shared storage (default DIR/mlartifacts); the server
#                   proxies uploads and downloads, so clients need only HTTP access
#   --auth          MLflow basic auth (users, permissions); see mlflow/README.md
#   --allowed-hosts LIST
#                   Host headers the server answers (MLflow's DNS-rebinding guard); the
#                   default for a non-loopback --host adds this machine's names and addresses
#
# Environment read here:
#   FETALGAN_VENV                   Python environment with mlflow (default ./.venv if it has
#                                   mlflow, else `mlflow` on PATH)
#   MLFLOW_AUTH_ADMIN_PASSWORD      with --auth: the admin password, needed on the first start
#   MLFLOW_FLASK_SERVER_SECRET_KEY  with --auth: CSRF key; default a random key kept in
#                                   DIR/secret_key (mode 0600)
#   MLFLOW_SQLALCHEMYSTORE_POOL_SIZE, MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW
#                                   database connections kept open / opened beyond them, for
#                                   a non-sqlite store (default 20 and 20: many trials write
#                                   at once; SQLAlchemy's default closes overflow connections)
# Secrets: the store URI (a PostgreSQL password in it) reaches MLflow through the environment
# (MLFLOW_BACKEND_STORE_URI), never a command line `ps` shows, and is printed with the password
# masked; DIR, the sqlite databases (runs, basic auth), the secret key and the artefacts are
# created under umask 077 (owner only; the server proxies artefacts to its clients).
# The server runs in the foreground; stop it with Ctrl-C or by PID.
set -euo pipefail

die() { echo "server.sh: error: $*" >&2; exit 2; }

HOST=127.0.0.1
PORT=5000
DIR=$PWD/mlflow_server
STORE=
ARTIFACTS=
AUTH=0
ALLOWED=
while (($#)); do
    case $1 in
    --host) HOST=${2:?--host needs a value} && shift ;;
    --port) PORT=${2:?--port needs a value} && shift ;;
    --dir) DIR=${2:?--dir needs a value} && shift ;;
    --backend-store-uri) STORE=${2:?--backend-store-uri needs a value} && shift ;;
    --artifacts) ARTIFACTS=${2:?--artifacts needs a value} && shift ;;
    --allowed-hosts) ALLOWED=${2:?--allowed-hosts needs a value} && shift ;;
    --auth) AUTH=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' && exit 0 ;;
    *) die "unknown option '$1'; expected --host, --port, --dir, --backend-store-uri, --artifacts, --auth, --allowed-hosts" ;;
    esac
    shift
done
[[ $PORT =~ ^[0-9]+$ ]] || die "--port '$PORT' is not a number"

VENV=${FETALGAN_VENV:-}
[[ -z $VENV && -x .venv/bin/mlflow ]] && VENV=$PWD/.venv
if [[ -n $VENV ]]; then
    [[ -x $VENV/bin/mlflow ]] || die "FETALGAN_VENV=$VENV has no bin/mlflow"
    export PATH=$VENV/bin:$PATH
fi
command -v mlflow >/dev/null || die "mlflow not found: set FETALGAN_VENV or put mlflow on PATH"
# What --backend-store-uri postgresql:// and --auth need beyond MLflow itself, checked in the
# Python beside `mlflow` (a venv's or conda env's) so that a missing one is named with the pip
# extra that brings it, not met as a traceback once the server starts.
MLFLOW_PYTHON=$(dirname -- "$(command -v mlflow)")/python
needs() { # needs MODULE EXTRA WHAT
    [[ -x $MLFLOW_PYTHON ]] || return 0 # no python beside mlflow: left to the server
    "$MLFLOW_PYTHON" -c "import $1" 2>/dev/null ||
        die "$3 needs the Python package $1, not installed in $(dirname -- "$MLFLOW_PYTHON"): pip install 'fetalgan[$2]'"
}
[[ $STORE == postgresql://* || $STORE == postgresql+psycopg://* ]] &&
    needs psycopg postgres "--backend-store-uri postgresql://..."
((AUTH)) && needs flask_wtf auth "--auth (MLflow's basic-auth app)"

umask 077 # everything created from here on, by this script or by MLflow: owner only
mkdir -p "$DIR"
DIR=$(realpath -s "$DIR")
for db in "$DIR/mlruns.db" "$DIR/basic_auth.db"; do [[ -f $db ]] && chmod 600 "$db"; done
STORE=${STORE:-sqlite:///$DIR/mlruns.db}
ARTIFACTS=${ARTIFACTS:-$DIR/mlartifacts}
mkdir -p "$ARTIFACTS"
# URI://USER:PASSWORD@HOST... -> URI://USER:***@HOST... for printing
SHOWN_STORE=$(sed -E 's#^([A-Za-z0-9+.-]+://[^/@:]*):[^/@]*@#\1:***@#' <<<"$STORE")

# One worker and no job runner: starts in ~4 s with ~410 MiB instead of ~15 s and ~2 GiB.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
export MLFLOW_BACKEND_STORE_URI=$STORE # read by `mlflow server`; not on its command line
if [[ $STORE != sqlite:* ]]; then
    # SQLAlchemy's default pool (5, overflow 10) closes each overflow connection after use: a
    # sweep's parallel writes then open a new authenticated PostgreSQL connection per request.
    export MLFLOW_SQLALCHEMYSTORE_POOL_SIZE=${MLFLOW_SQLALCHEMYSTORE_POOL_SIZE:-20}
    export MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW=${MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW:-20}
fi
args=(--host "$HOST" --port "$PORT" --workers 1
    --serve-artifacts --artifacts-destination "$ARTIFACTS")

if [[ $HOST == 127.0.0.1 || $HOST == localhost ]]; then
    SHOWN=127.0.0.1
else
    SHOWN=$(hostname -f 2>/dev/null || hostname)
    if [[ -z $ALLOWED ]]; then # MLflow's defaults (loopback, private ranges) plus our names
        ALLOWED='localhost,localhost:*,127.0.0.1,127.0.0.1:*,10.*,192.168.*,172.*,fd00:*'
        for name in "$(hostname -s)" "$SHOWN" "$HOST" $(hostname -I 2>/dev/null); do ALLOWED+=",$name,$name:*"; done
    fi
fi
[[ -n $ALLOWED ]] && args+=(--allowed-hosts "$ALLOWED")

if ((AUTH)); then
    if [[ ! -e $DIR/basic_auth.db && -z ${MLFLOW_AUTH_ADMIN_PASSWORD:-} ]]; then
        die "--auth: set MLFLOW_AUTH_ADMIN_PASSWORD for the first start (creates user 'admin')"
    fi
    if [[ -z ${MLFLOW_FLASK_SERVER_SECRET_KEY:-} ]]; then
        [[ -s $DIR/secret_key ]] || (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/secret_key")
        MLFLOW_FLASK_SERVER_SECRET_KEY=$(<"$DIR/secret_key")
        export MLFLOW_FLASK_SERVER_SECRET_KEY
    fi
    cat >"$DIR/basic_auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = sqlite:///$DIR/basic_auth.db
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
    export MLFLOW_AUTH_CONFIG_PATH=$DIR/basic_auth.ini
    args+=(--app-name basic-auth)
fi

echo "server.sh: MLflow on $HOST:$PORT, runs in $SHOWN_STORE, artefacts in $ARTIFACTS"
if ((!AUTH)) && [[ ! $HOST =~ ^(127\.[0-9.]+|localhost|::1)$ ]]; then
    echo "server.sh: warning: --host $HOST without --auth: anyone who reaches port $PORT can read," \
        "change and delete every run and artefact; add --auth, or keep --host 127.0.0.1 and use" \
        "an SSH tunnel" >&2
fi
echo "server.sh: on the cluster (jobs inherit it from the submitting shell):"
echo "export MLFLOW_TRACKING_URI=http://$SHOWN:$PORT"
((AUTH)) && echo "server.sh: clients also export MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
echo "server.sh: from a laptop: ssh -N -L $PORT:$SHOWN:$PORT $(whoami)@$(hostname -f 2>/dev/null || hostname), then http://127.0.0.1:$PORT"
exec mlflow server "${args[@]}"
