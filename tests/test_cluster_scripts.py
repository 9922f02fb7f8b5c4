"""slurm/ray_cluster.sh and mlflow/server.sh without a cluster: syntax, bad use gives a clear
message and a non-zero exit, and every environment variable they read is documented at their
top. (They run for real under Slurm in tests/e2e.)"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY_CLUSTER = REPO / "slurm" / "ray_cluster.sh"
SERVER = REPO / "mlflow" / "server.sh"


def run(script: Path, *args: str, env: dict | None = None, cwd: Path | None = None):
    # Not this session's Slurm variables or temp dir: the tests give a job its own.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM") and k != "TMPDIR"}
    return subprocess.run(
        ["bash", str(script), *args],
        env={**clean, **(env or {})},
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("script", [RAY_CLUSTER, SERVER])
def test_bash_syntax(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


@pytest.mark.parametrize("script", [RAY_CLUSTER, SERVER])
def test_every_environment_variable_read_is_documented(script):
    text = script.read_text()
    header = text[: text.index("set -euo pipefail")]
    body = text[len(header) :]
    lines = body.splitlines()

    def first(pattern: str) -> int | None:
        return next((i for i, line in enumerate(lines) if re.search(pattern, line)), None)

    read = set()  # read before (or where) the script first assigns it: it comes from outside
    for name in set(re.findall(r"\$\{?((?:FETALGAN|MLFLOW|RAY)_[A-Z_]+)", body)):
        used = first(rf"\$\{{?{name}\b")
        assigned = first(rf"(^|[\s;]){name}=")
        if assigned is None or used <= assigned:
            read.add(name)
    undocumented = sorted(v for v in read if v not in header)
    assert read and undocumented == [], f"{script.name} reads undocumented {undocumented}"


def test_sbatch_defaults():
    directives = re.findall(r"^#SBATCH (\S+)", RAY_CLUSTER.read_text(), flags=re.M)
    options = {d.split("=")[0] for d in directives}
    assert {
        "--job-name",
        "--ntasks-per-node",
        "--cpus-per-task",
        "--signal",
        "--requeue",
    } <= options
    assert "--output" in options
    # B: the batch shell, which forwards it. The lead covers the sweep's save and Ray's drain
    # (up to ~60 s) and the clean-up step on every node (bounded by its timeout).
    assert "--signal=B:USR1@180" in directives
    text = RAY_CLUSTER.read_text()
    (cleanup_s,) = {int(s) for s in re.findall(r"timeout (\d+) srun", text)}
    assert 180 >= 60 + cleanup_s + 30
    header = text[: text.index("set -euo pipefail")]
    assert "sbatch --signal=B:USR1@300" in header  # how a user gives a longer lead


def test_no_sweep_file():
    result = run(RAY_CLUSTER)
    assert result.returncode == 2
    assert "no sweep file" in result.stderr and "usage" in result.stderr


def test_missing_sweep_file(tmp_path):
    result = run(RAY_CLUSTER, "sweeps/does_not_exist.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "sweeps/does_not_exist.yaml' not found" in result.stderr


def test_not_under_slurm():
    result = run(RAY_CLUSTER, "sweeps/smoke.yaml")
    assert result.returncode == 2
    assert "not inside a Slurm batch job" in result.stderr and "sbatch" in result.stderr


def test_missing_image(tmp_path):
    env = {"SLURM_JOB_ID": "1", "SLURMD_NODENAME": "n1", "FETALGAN_IMAGE": str(tmp_path / "x.sif")}
    result = run(RAY_CLUSTER, "sweeps/smoke.yaml", env=env)
    assert result.returncode == 2 and "no such image file" in result.stderr


def test_invalid_sweep_file_fails_before_ray_starts(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nnum_sampels: 3\n")
    env = {"SLURM_JOB_ID": "1", "SLURMD_NODENAME": "n1", "FETALGAN_VENV": str(REPO / ".venv")}
    result = run(RAY_CLUSTER, str(bad), env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "num_sampels" in result.stderr
    assert "Ray head" not in result.stdout


def test_server_rejects_unknown_option():
    result = run(SERVER, "--hots", "0.0.0.0")
    assert result.returncode == 2 and "unknown option '--hots'" in result.stderr


def test_server_rejects_bad_port():
    result = run(SERVER, "--port", "http")
    assert result.returncode == 2 and "not a number" in result.stderr


def test_server_auth_needs_admin_password(tmp_path):
    env = {"MLFLOW_AUTH_ADMIN_PASSWORD": "", "FETALGAN_VENV": str(REPO / ".venv")}
    result = run(SERVER, "--auth", "--dir", str(tmp_path), env=env)
    assert result.returncode == 2 and "MLFLOW_AUTH_ADMIN_PASSWORD" in result.stderr


def test_server_help():
    result = run(SERVER, "--help")
    assert result.returncode == 0 and "--backend-store-uri" in result.stdout


def test_sweep_options_are_validated_with_the_sweep_file_before_ray_starts(tmp_path):
    """--set on sweep-file keys goes through the same loader as `fetalgan sweep` (a bad value
    stops the job before any Ray step)."""
    good = tmp_path / "good.yaml"
    good.write_text("name: good\n")
    env = {"SLURM_JOB_ID": "1", "SLURMD_NODENAME": "n1", "FETALGAN_VENV": str(REPO / ".venv")}
    result = run(RAY_CLUSTER, str(good), "--set", "max_concurrent=0", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "max_concurrent: must be > 0" in result.stderr
    assert "Ray head" not in result.stdout


# --------------------------------------------------------------------------------------------
# ray_cluster.sh's command lines, with recorders standing in for srun, ray, scontrol and ip
# (the real run, on a real two-node Slurm, is tests/e2e/test_slurm_two_node.py)
# --------------------------------------------------------------------------------------------

# Each recorder appends its line to $REC/commands in one write (`printf -v`, then one echo):
# the node steps record concurrently, and a line written piece by piece (printf srun; printf
# ' %q' ...; echo) interleaved with another step's into lines no assertion recognised.
RECORDERS = {
    # srun: record the command line and the Ray variables it passes on, then run the step in
    # its own session and, on TERM, signal all of it (as slurmd does to a step's processes).
    "srun": r"""#!/bin/bash
printf -v line ' %q' "$@"; echo "srun$line" >>"$REC/commands"
env | grep -E '^RAY_(AUTH|ADDRESS)' | sort >"$REC/env-srun-$$"
[[ -n ${FAKE_STEP_GPUS:-} ]] && export CUDA_VISIBLE_DEVICES=$FAKE_STEP_GPUS # as slurmstepd does
while (($#)); do case $1 in -w) shift 2 ;; -*) shift ;; *) break ;; esac; done
setsid "$@" &
pid=$!
trap 'kill -TERM -- -$pid 2>/dev/null' TERM
wait $pid || wait $pid
""",
    "ray": r"""#!/bin/bash
case $1 in
start)
    printf -v line ' %q' "$@"; echo "ray$line" >>"$REC/commands"
    tmp=${!#}
    tmp=${tmp#--temp-dir=}
    stat -c '%a %n' "${tmp%/r}" >>"$REC/tempdirs"
    env | grep -E '^(RAY_(AUTH|ADDRESS)|CUDA_VISIBLE_DEVICES)' | sort >"$REC/env-ray-$$"
    touch "$REC/joined-$$"
    exec sleep 300 ;;
status) for joined in "$REC"/joined-*; do [[ -e $joined ]] && echo " 1 node_${joined##*-}"; done ;;
esac
""",
    "scontrol": r"""#!/bin/bash
case "$*" in
"show hostnames "*) printf '%s\n' $FAKE_NODELIST ;;
"-o show node "*) echo "NodeName=$4 NodeAddr=$FAKE_PEER State=IDLE" ;;
*) printf -v line ' %q' "$@"; echo "scontrol$line" >>"$REC/commands" ;;
esac
""",
    "ip": r"""#!/bin/bash
case "$*" in
"-o route get "*) echo "$4 via 10.1.0.1 dev ib0 src 10.1.0.7 uid 0 \    cache" ;;
"-o -4 addr show dev ib1") echo "4: ib1    inet 10.9.9.9/16 brd 10.9.255.255 scope global ib1" ;;
esac
""",
    "hostname": '#!/bin/bash\necho "192.168.1.5 10.1.0.7"\n',
}
DRIVER = r"""#!/bin/bash
printf -v line ' %q' "$@"; echo "fetalgan$line" >>"$REC/commands"
env | grep -E '^RAY_(AUTH|ADDRESS)' | sort >"$REC/env-driver"
env | sed 's/=.*//' | sort >"$REC/driver-variables"
for private in "${FAKE_TMP:-/tmp}"/fetalgan-"$SLURM_JOB_ID".*; do
    stat -c '%a %n' "$private" >"$REC/private"
    stat -c '%a' "$private/ray_token" >>"$REC/private"
done
# the node-wide port lock: released once Ray is up, and not kept by the Ray steps
if flock -n /tmp/fetalgan-ray-ports true; then echo free >"$REC/port-lock"; else echo held >"$REC/port-lock"; fi
"""
# A stand-in for `apptainer` / `singularity`: records its command line and the names of the
# variables it would pass in (APPTAINERENV_X / SINGULARITYENV_X), then runs the command as
# `exec --cleanenv` would: in an environment holding only those (prefix removed), the image's
# PATH (FAKE_IMAGE_PATH), HOME, and the recorders' own REC and FAKE_TMP.
FAKE_CONTAINER = r"""#!/bin/bash
printf -v line ' %q' "$@"; echo "${0##*/}$line" >>"$REC/commands"
prefix=APPTAINERENV_
[[ ${0##*/} == singularity ]] && prefix=SINGULARITYENV_
passed=()
for name in $(compgen -e); do
    [[ $name == "$prefix"* ]] && passed+=("${name#"$prefix"}=${!name}")
done
compgen -e | grep -E '^(APPTAINER|SINGULARITY)ENV_' | sort >"$REC/container-env-$$"
[[ $1 == exec ]] || exit 97
shift
while [[ $1 == --* ]]; do case $1 in --bind) shift 2 ;; *) shift ;; esac; done
shift # the image
exec env -i PATH="$FAKE_IMAGE_PATH" HOME="$HOME" REC="$REC" FAKE_TMP="${FAKE_TMP:-}" "${passed[@]}" "$@"
"""


def recorded_job(
    tmp_path: Path,
    nodes: list[str],
    *,
    job_id: str | None = None,
    containers: tuple[str, ...] = (),
    **env: str,
):
    """ray_cluster.sh sweeps/smoke.yaml as a job on ``nodes`` (the first is the head), with the
    recorders above on PATH (and FAKE_CONTAINER under each name in ``containers``); returns
    (result, the recorder's directory, the job id)."""
    rec, fake_bin, venv_bin = tmp_path / "rec", tmp_path / "bin", tmp_path / "venv" / "bin"
    for path in (rec, fake_bin, venv_bin):
        path.mkdir(parents=True)
    recorders = {**RECORDERS, **{name: FAKE_CONTAINER for name in containers}}
    for name, text in recorders.items():
        (fake_bin / name).write_text(text)
        (fake_bin / name).chmod(0o755)
    (venv_bin / "fetalgan").write_text(DRIVER)
    (venv_bin / "python").write_text(f'#!/bin/bash\nexec {REPO}/.venv/bin/python "$@"\n')
    for exe in venv_bin.iterdir():
        exe.chmod(0o755)
    job_id = job_id or str(900000 + os.getpid() % 99999)
    settings = {
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "FAKE_IMAGE_PATH": f"{fake_bin}:{venv_bin}:/usr/bin:/bin",
        "REC": str(rec),
        "SLURM_JOB_ID": job_id,
        "SLURMD_NODENAME": nodes[0],
        "SLURM_JOB_NODELIST": ",".join(nodes),
        "SLURM_JOB_NUM_NODES": str(len(nodes)),
        "FAKE_NODELIST": " ".join(nodes),
        "FAKE_PEER": "10.1.2.3",
        "FETALGAN_VENV": str(venv_bin.parent),
        "FETALGAN_STORAGE": str(tmp_path / "ray_results"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns.db",
        "RAY_AUTH_MODE": "disabled",  # what the user had: the job turns token auth on anyway
        **env,
    }
    result = run(RAY_CLUSTER, str(REPO / "sweeps" / "smoke.yaml"), env=settings, cwd=tmp_path)
    return result, rec, job_id


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_ray_nodes_and_driver_share_a_per_job_token(tmp_path):
    result, rec, job_id = recorded_job(tmp_path, ["n1", "n2"])
    assert result.returncode == 0, result.stderr
    commands = (rec / "commands").read_text().splitlines()
    sruns = [c for c in commands if c.startswith("srun ")]
    assert len(sruns) == 3 and all("--export=ALL" in c for c in sruns), sruns  # 2 nodes, rm
    driver = _env_file(rec / "env-driver")
    token = driver["RAY_AUTH_TOKEN"]
    assert driver["RAY_AUTH_MODE"] == "token" and re.fullmatch(r"[0-9a-f]{64}", token), driver
    # Every srun step and every `ray start` got the same token, through the environment only.
    seen = [_env_file(p) for p in rec.glob("env-*")]
    assert len(seen) == 6  # 3 srun (2 Ray nodes, the clean-up), 2 ray start, 1 driver
    assert all(e["RAY_AUTH_MODE"] == "token" and e["RAY_AUTH_TOKEN"] == token for e in seen)
    assert not any(token in c for c in commands), "the token appeared on a command line"
    assert token not in result.stdout + result.stderr
    # The private directory was 0700 with a 0600 token while the job ran, and is gone now.
    mode, private, token_mode = (rec / "private").read_text().split()
    assert (mode, token_mode) == ("700", "600") and private.startswith("/tmp/fetalgan-")
    assert not list(Path("/tmp").glob(f"fetalgan-{job_id}.*"))
    # The node-wide lock on choosing ports was released before the sweep, steps running.
    assert (rec / "port-lock").read_text().split() == ["free"]
    # A next job cannot reuse this one's token.
    again, rec2, _ = recorded_job(tmp_path / "again", ["n1", "n2"])
    assert again.returncode == 0 and _env_file(rec2 / "env-driver")["RAY_AUTH_TOKEN"] != token


def test_ray_temp_dirs_are_private_and_removed_on_every_node(tmp_path):
    """Ray makes its --temp-dir world-writable: it lies inside a 0700 directory whose random
    name no other job can guess; each node creates that directory itself (exclusively) and a
    last step per node removes it (Slurm SIGKILLs a killed step's own clean-up)."""
    result, rec, job_id = recorded_job(tmp_path, ["n1", "n2"])
    assert result.returncode == 0, result.stderr
    commands = (rec / "commands").read_text().splitlines()
    starts = [c for c in commands if c.startswith("ray start")]
    assert len(starts) == 2
    temp_dirs = sorted(c.split()[-1].removeprefix("--temp-dir=") for c in starts)
    prefix = temp_dirs[0][: -len("-0/r")]
    assert re.fullmatch(rf"/tmp/ray-{job_id}\.\w{{10}}", prefix), temp_dirs
    assert temp_dirs == [f"{prefix}-0/r", f"{prefix}-1/r"]  # one per node (/tmp may be shared)
    parents = sorted(line.split()[1] for line in (rec / "tempdirs").read_text().splitlines())
    assert parents == [f"{prefix}-0", f"{prefix}-1"]
    assert {line.split()[0] for line in (rec / "tempdirs").read_text().splitlines()} == {"700"}
    (cleanup,) = [c for c in commands if c.startswith("srun") and " rm-ray " in c]
    assert "--nodes=2" in cleanup and "--ntasks-per-node=1" in cleanup and cleanup.endswith(prefix)
    assert not any(Path(p).exists() for p in parents), "a Ray temp dir outlived the job"
    _, rec2, _ = recorded_job(tmp_path / "next", ["n1", "n2"])
    assert prefix not in (rec2 / "commands").read_text()  # another name for the next job


def test_head_address_is_the_one_routing_to_the_other_nodes(tmp_path):
    """Not the first of `hostname -I` (192.168.1.5 in the recorder), but the source address of
    the route to the second node (10.1.0.7); FETALGAN_RAY_IFACE picks an interface instead."""
    result, rec, _ = recorded_job(tmp_path / "route", ["n1", "n2"])
    assert result.returncode == 0, result.stderr
    address = _env_file(rec / "env-driver")["RAY_ADDRESS"]
    assert re.fullmatch(r"10\.1\.0\.7:\d+", address), address
    assert f"--address={address}" in (rec / "commands").read_text()
    assert "--node-ip-address=10.1.0.7" in _ray_starts(rec)["head"]

    result, rec, _ = recorded_job(tmp_path / "iface", ["n1", "n2"], FETALGAN_RAY_IFACE="ib1")
    assert result.returncode == 0, result.stderr
    assert _env_file(rec / "env-driver")["RAY_ADDRESS"].startswith("10.9.9.9:")
    assert "--node-ip-address=10.9.9.9" in _ray_starts(rec)["head"]

    result, rec, _ = recorded_job(tmp_path / "bad", ["n1", "n2"], FETALGAN_RAY_IFACE="eth7")
    assert result.returncode == 2
    assert "no IPv4 address for the Ray head on interface eth7" in result.stderr
    assert not (rec / "commands").exists() or "ray start" not in (rec / "commands").read_text()


def _ray_starts(rec: Path) -> dict:
    """The recorded `ray start` command lines: {"head": its arguments, "workers": [...]}."""
    commands = (rec / "commands").read_text().splitlines()
    starts = [shlex.split(c)[2:] for c in commands if c.startswith("ray start ")]
    heads = [a for a in starts if "--head" in a]
    assert len(heads) == 1, starts
    return {"head": heads[0], "workers": [a for a in starts if "--head" not in a]}


def _options(args: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)


# Ray's ports (the script's header): a block of 512 from 20000 per job, 24 blocks.
PORT_LO, PORT_BLOCK, PORT_BLOCKS = 20000, 512, 24
NODE_PORTS = {  # a node's own ports: offset in the block
    "--node-manager-port": 2,
    "--object-manager-port": 3,
    "--dashboard-agent-listen-port": 4,
    "--dashboard-agent-grpc-port": 5,
    "--runtime-env-agent-port": 6,
    "--metrics-export-port": 7,
    "--min-worker-port": 16,
    "--max-worker-port": PORT_BLOCK - 1,
}
HEAD_PORTS = {"--port": 0, "--ray-client-server-port": 1, "--dashboard-port": 8}


def _with_ray_client(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH with an empty `grpc` package: the script then sees Ray Client installed (the
    venv's ray[tune] has no grpc, and `ray start` refuses a client port without it)."""
    (tmp_path / "client" / "grpc").mkdir(parents=True)
    (tmp_path / "client" / "grpc" / "__init__.py").write_text("")
    return {"PYTHONPATH": str(tmp_path / "client")}


def _head_base(rec: Path) -> int:
    base = int(_options(_ray_starts(rec)["head"])["--port"])
    assert (base - PORT_LO) % PORT_BLOCK == 0 and 0 <= (base - PORT_LO) // PORT_BLOCK < PORT_BLOCKS
    return base


def _ports(rec: Path) -> set[int]:
    """Every port a `ray start` of the job was given (worker ranges in full)."""
    ports = set()
    for args in [_ray_starts(rec)["head"], *_ray_starts(rec)["workers"]]:
        options = {k: int(v) for k, v in _options(args).items() if k in {*NODE_PORTS, *HEAD_PORTS}}
        ports |= set(options.values())
        ports |= set(range(options["--min-worker-port"], options["--max-worker-port"] + 1))
    return ports


def test_head_and_workers_get_the_ports_of_the_jobs_block(tmp_path):
    """Every Ray port of the job is given explicitly, from the job's block: two jobs sharing a
    node no longer both take Ray's fixed defaults (6379, 52365, 10001...)."""
    job_id = str(900000 + os.getpid() % 99999)
    result, rec, _ = recorded_job(
        tmp_path, ["n1", "n2", "n3"], job_id=job_id, **_with_ray_client(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    base = _head_base(rec)
    block = (base - PORT_LO) // PORT_BLOCK
    moved = f"(block {int(job_id) % PORT_BLOCKS} has ports in use)" in result.stdout
    assert block == int(job_id) % PORT_BLOCKS or moved, result.stdout
    head = _options(_ray_starts(rec)["head"])
    expected = {k: base + offset for k, offset in {**HEAD_PORTS, **NODE_PORTS}.items()}
    assert {k: int(head[k]) for k in expected} == expected, head
    assert head["--node-ip-address"] == "10.1.0.7"  # the address routing to the other nodes
    # The other nodes: the same node ports (the block is free on them too: here they are all
    # this machine), the head's address, and none of the head's own options.
    workers = [_options(args) for args in _ray_starts(rec)["workers"]]
    assert len(workers) == 2
    for worker in workers:
        assert {k: int(worker[k]) for k in NODE_PORTS} == {k: expected[k] for k in NODE_PORTS}
        assert worker["--address"] == f"10.1.0.7:{base}"
        assert not {*HEAD_PORTS, "--node-ip-address"} & worker.keys(), worker
    assert _env_file(rec / "env-driver")["RAY_ADDRESS"] == f"10.1.0.7:{base}"
    # One log line names them all; each node says which block it took.
    (line,) = [x for x in result.stdout.splitlines() if ": Ray ports " in x]
    assert f"job {job_id}, restart 0: Ray ports {base}-{base + PORT_BLOCK - 1} on n1" in line
    assert f"GCS {base}, Ray Client {base + 1}, dashboard {base + 8}" in line
    assert f"node-manager-port={base + 2}" in line and f"max-worker-port={base + 511}" in line
    assert result.stdout.count(f"its Ray ports: block {block}") == 3

    # Without Ray Client installed (grpc), no client port: `ray start` would refuse it.
    again, rec2, _ = recorded_job(tmp_path / "no-client", ["n1"], job_id=job_id)
    assert again.returncode == 0, again.stderr
    assert "--ray-client-server-port" not in _options(_ray_starts(rec2)["head"])
    assert "no Ray Client server (grpc not installed)" in again.stdout


def test_two_jobs_on_one_node_take_distinct_ports(tmp_path):
    """A second job on the node while the first one's Ray runs (its ports in use, held here by
    sockets) gets other ports: by its id (the next block), or, where its id gives the first
    job's block, by moving on to the next free block. The recorders bind nothing, so each
    job here sees only the sockets this test holds (and whatever else runs on this machine)."""
    first_id = 900000 + os.getpid() % 99999
    first, rec1, _ = recorded_job(tmp_path / "a", ["n1"], job_id=str(first_id))
    assert first.returncode == 0, first.stderr
    ports1 = _ports(rec1)
    base1 = _head_base(rec1)
    block1 = (base1 - PORT_LO) // PORT_BLOCK
    held = []
    try:
        for port in (base1, base1 + 2):  # the first job's GCS and node manager, listening
            sock = socket.socket()
            sock.bind(("127.0.0.1", port))
            sock.listen()
            held.append(sock)
        second, rec2, _ = recorded_job(tmp_path / "b", ["n1"], job_id=str(first_id + 1))
        assert second.returncode == 0, second.stderr
        assert not ports1 & _ports(rec2), "a port of the running job was given again"
        if "has ports in use" not in first.stdout + second.stdout:  # both blocks by id
            assert (_head_base(rec2) - PORT_LO) // PORT_BLOCK == (block1 + 1) % PORT_BLOCKS

        same_block = first_id + PORT_BLOCKS  # its id gives the first job's block by id
        third, rec3, _ = recorded_job(tmp_path / "c", ["n1", "n2"], job_id=str(same_block))
        assert third.returncode == 0, third.stderr
        assert not ports1 & _ports(rec3), "a port of the running job was given again"
        block3 = (_head_base(rec3) - PORT_LO) // PORT_BLOCK
        assert block3 != block1
        id_block = same_block % PORT_BLOCKS
        assert f"block {block3} (block {id_block} has ports in use)" in third.stdout
        assert third.stdout.count(f"its Ray ports: block {block3}") == 2  # head and worker
        # FETALGAN_RAY_PORT names the GCS port; one in use stops the job before Ray starts.
        taken, rec4, _ = recorded_job(
            tmp_path / "d", ["n1"], job_id=str(same_block), FETALGAN_RAY_PORT=str(base1)
        )
        assert taken.returncode == 2
        assert f"FETALGAN_RAY_PORT={base1} is in use on n1" in taken.stderr
        assert not (rec4 / "commands").exists()  # no srun, no ray start
    finally:
        for sock in held:
            sock.close()
    chosen, rec5, _ = recorded_job(
        tmp_path / "e", ["n1"], job_id=str(same_block), FETALGAN_RAY_PORT="6399"
    )
    assert chosen.returncode == 0, chosen.stderr
    assert _options(_ray_starts(rec5)["head"])["--port"] == "6399"
    assert _env_file(rec5 / "env-driver")["RAY_ADDRESS"].endswith(":6399")


def test_temp_dirs_go_under_slurm_tmpdir_or_tmpdir(tmp_path):
    """SLURM_TMPDIR, else TMPDIR, holds the private token directory and the Ray temp dirs; a
    directory too long for Ray's AF_UNIX sockets, or missing, falls back to /tmp (logged)."""
    short = [Path(tempfile.mkdtemp(prefix="t", dir="/tmp")) for _ in range(2)]
    try:
        for name, env in [
            ("tmpdir", {"TMPDIR": f"{short[0]}/"}),
            ("slurm", {"SLURM_TMPDIR": str(short[1]), "TMPDIR": str(short[0])}),
        ]:
            root = short[1] if "SLURM_TMPDIR" in env else short[0]
            result, rec, job_id = recorded_job(
                tmp_path / name, ["n1", "n2"], FAKE_TMP=str(root), **env
            )
            assert result.returncode == 0, result.stderr
            starts = [_ray_starts(rec)["head"], *_ray_starts(rec)["workers"]]
            temp_dirs = [a[-1].removeprefix("--temp-dir=") for a in starts]
            assert all(
                re.fullmatch(rf"{root}/ray-{job_id}\.\w{{10}}-[01]/r", t) for t in temp_dirs
            ), temp_dirs
            assert all(len(t) <= 43 for t in temp_dirs)
            mode, private, token_mode = (rec / "private").read_text().split()
            assert private.startswith(f"{root}/fetalgan-{job_id}.") and mode == "700"
            assert list(root.iterdir()) == [], "the job left files in its temp dir"
            assert "using /tmp" not in result.stdout
    finally:
        for path in short:
            shutil.rmtree(path, ignore_errors=True)

    long_dir = tmp_path / ("x" * 30)  # /tmp/pytest-of-.../x...: Ray's sockets would not fit
    long_dir.mkdir()
    result, rec, job_id = recorded_job(tmp_path / "long", ["n1"], TMPDIR=str(long_dir))
    assert result.returncode == 0, result.stderr
    assert (
        f"temp dir {long_dir} (SLURM_TMPDIR or TMPDIR) is too long for Ray's sockets"
        in result.stdout
    )
    assert _ray_starts(rec)["head"][-1].startswith(f"--temp-dir=/tmp/ray-{job_id}.")
    assert (rec / "private").read_text().split()[1].startswith(f"/tmp/fetalgan-{job_id}.")

    result, rec, job_id = recorded_job(tmp_path / "missing", ["n1"], SLURM_TMPDIR="/nonexistent/j1")
    assert result.returncode == 0, result.stderr
    assert (
        "temp dir /nonexistent/j1 (SLURM_TMPDIR or TMPDIR) is not a writable directory: using /tmp"
        in result.stdout
    )
    assert _ray_starts(rec)["head"][-1].startswith(f"--temp-dir=/tmp/ray-{job_id}.")


CONTAINER_OWN = {"PATH", "HOME", "REC", "FAKE_TMP", "PWD", "SHLVL", "_", "OLDPWD"}
PASSED = re.compile(
    r"(RAY|MLFLOW|FETALGAN)_\w+|CUDA_VISIBLE_DEVICES|SLURM_JOB_ID|SLURM_JOB_NODELIST"
    r"|SLURMD_NODENAME|SLURM_RESTART_COUNT"
)


@pytest.mark.parametrize(
    "runtimes", [("apptainer",), ("singularity",), ("apptainer", "singularity")]
)
def test_image_commands_run_with_cleanenv_and_the_jobs_variables(tmp_path, runtimes):
    """With FETALGAN_IMAGE: `RUNTIME exec --nv --cleanenv --bind ... IMAGE CMD` (apptainer,
    else singularity); the image gets the job's variables (the Ray token among them) through
    APPTAINERENV_ / SINGULARITYENV_ variables, never on a command line, and nothing else."""
    image = tmp_path / "fetalgan.sif"
    image.write_bytes(b"\0" * 64)
    result, rec, job_id = recorded_job(
        tmp_path,
        ["n1", "n2"],
        containers=runtimes,
        FETALGAN_IMAGE=str(image),
        FAKE_STEP_GPUS="0,1",
        UNRELATED_HOST_SETTING="not for the image",
        SLURM_RESTART_COUNT="2",
    )
    assert result.returncode == 0, result.stderr
    runtime = runtimes[0]  # apptainer first
    prefix = "APPTAINERENV_" if runtime == "apptainer" else "SINGULARITYENV_"
    assert "restart 2 of this job" in result.stdout and "restart 2: Ray ports" in result.stdout
    commands = (rec / "commands").read_text().splitlines()
    wrapped = [shlex.split(c) for c in commands if c.startswith(f"{runtime} ")]
    assert not [
        c
        for c in commands
        if c.startswith(("apptainer ", "singularity ")) and not c.startswith(f"{runtime} ")
    ]
    for argv in wrapped:
        assert argv[1:4] == ["exec", "--nv", "--cleanenv"] and argv[4] == "--bind", argv
        assert argv[6] == str(image), argv
    run_in_image = sorted({tuple(argv[7:9]) for argv in wrapped})
    assert run_in_image == [
        ("fetalgan", "sweep"),
        ("python", "-c"),
        ("ray", "start"),
        ("ray", "status"),
    ]
    # Inside: the job's token, address and settings; the step's own GPUs; no host leftovers.
    driver = _env_file(rec / "env-driver")
    token = driver["RAY_AUTH_TOKEN"]
    assert driver["RAY_AUTH_MODE"] == "token" and re.fullmatch(r"[0-9a-f]{64}", token)
    assert driver["RAY_ADDRESS"].startswith("10.1.0.7:")
    inside = set((rec / "driver-variables").read_text().split())
    assert {"MLFLOW_TRACKING_URI", "FETALGAN_IMAGE", "FETALGAN_STORAGE", "SLURM_JOB_ID"} <= inside
    assert "SLURM_RESTART_COUNT" in inside
    assert all(v in CONTAINER_OWN or PASSED.fullmatch(v) for v in inside), inside - CONTAINER_OWN
    assert "UNRELATED_HOST_SETTING" not in inside
    ray_envs = [_env_file(p) for p in rec.glob("env-ray-*")]
    assert len(ray_envs) == 2
    assert all(
        e["RAY_AUTH_TOKEN"] == token and e["CUDA_VISIBLE_DEVICES"] == "0,1" for e in ray_envs
    )
    passed = {n for p in rec.glob("container-env-*") for n in p.read_text().split()}
    assert {
        f"{prefix}RAY_AUTH_TOKEN",
        f"{prefix}MLFLOW_TRACKING_URI",
        f"{prefix}CUDA_VISIBLE_DEVICES",
    } <= passed
    assert all(n.startswith(prefix) for n in passed), passed
    assert not any(token in c or "RAY_AUTH_TOKEN" in c for c in commands), "token on a command line"
    assert token not in result.stdout + result.stderr


def test_image_needs_apptainer_or_singularity(tmp_path):
    if shutil.which("apptainer", path="/usr/bin:/bin") or shutil.which(
        "singularity", path="/usr/bin:/bin"
    ):
        pytest.skip("a real apptainer/singularity is installed here")
    image = tmp_path / "x.sif"
    image.write_bytes(b"\0")
    env = {
        "SLURM_JOB_ID": "1",
        "SLURMD_NODENAME": "n1",
        "FETALGAN_IMAGE": str(image),
        "PATH": "/usr/bin:/bin",
    }
    result = run(RAY_CLUSTER, "sweeps/smoke.yaml", env=env)
    assert result.returncode == 2
    assert "neither apptainer nor singularity is on PATH" in result.stderr


# --------------------------------------------------------------------------------------------
# server.sh's secrets, with a recorder standing in for `mlflow server` (the real server runs
# in tests/e2e/test_mlflow_server.py)
# --------------------------------------------------------------------------------------------

FAKE_MLFLOW = r"""#!/bin/bash
{ printf mlflow; printf ' %q' "$@"; echo; } >"$REC"
echo "MLFLOW_BACKEND_STORE_URI=$MLFLOW_BACKEND_STORE_URI" >>"$REC"
echo "umask=$(umask)" >>"$REC"
"""


def recorded_server(tmp_path: Path, *args: str, **env: str):
    """server.sh ARGS with a recorder as mlflow; (result, recorded lines)."""
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "mlflow").write_text(FAKE_MLFLOW)
    (venv_bin / "mlflow").chmod(0o755)
    record = tmp_path / "mlflow.rec"
    settings = {"FETALGAN_VENV": str(venv_bin.parent), "REC": str(record), **env}
    result = run(SERVER, "--dir", str(tmp_path / "server"), *args, env=settings)
    return result, record.read_text().splitlines() if record.exists() else []


def test_server_store_uri_goes_through_the_environment_with_the_password_masked(tmp_path):
    uri = "postgresql://fetalgan:s3cr3t-pw@db.cluster:5432/runs"
    result, recorded = recorded_server(tmp_path, "--backend-store-uri", uri)
    assert result.returncode == 0, result.stderr
    command, store, umask = recorded
    assert "s3cr3t-pw" not in command and "--backend-store-uri" not in command, command
    assert store == f"MLFLOW_BACKEND_STORE_URI={uri}"
    assert "s3cr3t-pw" not in result.stdout + result.stderr
    assert "runs in postgresql://fetalgan:***@db.cluster:5432/runs" in result.stdout
    assert umask == "umask=0077"  # what MLflow creates (databases, artefacts) is owner-only
    assert (tmp_path / "server").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "server" / "mlartifacts").stat().st_mode & 0o777 == 0o700


def test_server_tightens_existing_databases(tmp_path):
    state = tmp_path / "server"
    state.mkdir()
    for name in ("mlruns.db", "basic_auth.db"):
        (state / name).write_bytes(b"")
        (state / name).chmod(0o644)
    result, recorded = recorded_server(tmp_path)
    assert result.returncode == 0, result.stderr
    assert recorded[1] == f"MLFLOW_BACKEND_STORE_URI=sqlite:///{state}/mlruns.db"
    assert "runs in sqlite:///" in result.stdout
    for name in ("mlruns.db", "basic_auth.db"):
        assert (state / name).stat().st_mode & 0o777 == 0o600, name


@pytest.mark.parametrize(
    ("args", "warned"),
    [
        (["--host", "0.0.0.0"], True),
        (["--host", "10.0.0.5"], True),
        (["--host", "0.0.0.0", "--auth"], False),
        (["--host", "127.0.0.1"], False),
        (["--host", "localhost"], False),
        ([], False),
    ],
)
def test_server_warns_when_open_to_the_network_without_auth(tmp_path, args, warned):
    result, _ = recorded_server(tmp_path, *args, MLFLOW_AUTH_ADMIN_PASSWORD="pw")
    assert result.returncode == 0, result.stderr
    assert ("warning: --host" in result.stderr and "without --auth" in result.stderr) == warned


# ---- the srun steps' options, recorded -------------------------------------------------------
# The real Slurm of tests/e2e has no GPUs, so how the script passes a job's GPUs to its steps is
# checked here with recorders standing in for `srun` and `scontrol`: they log the command
# line (and the GPU variables srun would read) and exit. The CPU side runs for real in
# tests/e2e/test_slurm.py.

RECORDING_SRUN = """#!/bin/bash
{ python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@"; echo "SLURM_GPUS=${SLURM_GPUS-unset} SLURM_GPUS_PER_TASK=${SLURM_GPUS_PER_TASK-unset}"; } >>"$SRUN_LOG"
"""
FAKE_SCONTROL = """#!/bin/bash
[[ $1 == show && $2 == hostnames ]] && { echo "$SLURMD_NODENAME"; exit 0; }
exit 1
"""


def recorded_step(tmp_path, **slurm_env) -> tuple[list[str], str, str]:
    """Run the script with the recorders; the head step's argv, the GPU variables its srun saw,
    and the job's stdout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", RECORDING_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\n")
    log = tmp_path / "srun.log"
    tmp = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))  # the job's TMPDIR (short: sockets)
    env = {
        "TMPDIR": str(tmp),
        "SLURM_JOB_ID": "77",
        "SLURMD_NODENAME": "n1",
        "SLURM_JOB_NODELIST": "n1",
        "SLURM_CPUS_PER_TASK": "4",
        "FETALGAN_VENV": str(REPO / ".venv"),
        "FETALGAN_RAY_WAIT": "0",  # the recorded head "exits" at once: stop waiting for it
        "SRUN_LOG": str(log),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        **slurm_env,
    }
    try:
        result = run(RAY_CLUSTER, str(sweep), env=env, cwd=tmp_path)
        left = sorted(p.name for p in tmp.iterdir())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert result.returncode == 2 and "Ray head on n1" in result.stdout, result.stderr
    # The head "exited" (the recorder): the clean-up still removed the token directory.
    assert left == [], f"left in the job's temp dir: {left}"
    argv_line, gpu_vars = log.read_text().splitlines()[:2]
    return json.loads(argv_line), gpu_vars, result.stdout


def test_steps_get_the_jobs_cpus_and_no_gpus_when_the_job_has_none(tmp_path):
    argv, _, stdout = recorded_step(tmp_path)
    options = argv[: argv.index("-w")]
    assert options == ["--export=ALL", "--nodes=1", "--ntasks=1", "--cpus-per-task=4"]
    ray = argv[argv.index("ray") :]
    assert "--num-cpus=4" in ray and "--num-gpus=0" in ray  # a node's GPUs outside the job
    assert "4 CPUs per node, no GPUs (the job has none)" in stdout


def test_steps_get_the_gpus_per_node_and_ray_counts_them(tmp_path):
    argv, _, stdout = recorded_step(
        tmp_path, SLURM_GPUS_PER_NODE="a100:2", SLURM_GPUS_ON_NODE="2", SLURM_JOB_GPUS="0,1"
    )
    assert "--cpus-per-task=4" in argv and "--gpus-per-node=a100:2" in argv
    ray = argv[argv.index("ray") :]
    assert not [a for a in ray if a.startswith("--num-gpus")]  # from CUDA_VISIBLE_DEVICES
    assert "GPUs as its step sees them" in stdout


def test_job_wide_gpu_counts_are_not_a_one_node_steps_request(tmp_path):
    """`sbatch --gpus=8 --nodes=2`: srun would read SLURM_GPUS=8 as the request of a one-node
    step; the script leaves it out so each step gets the job's GPUs on its own node."""
    argv, gpu_vars, _ = recorded_step(tmp_path, SLURM_GPUS="8", SLURM_GPUS_ON_NODE="4")
    assert gpu_vars == "SLURM_GPUS=unset SLURM_GPUS_PER_TASK=unset"
    assert not [a for a in argv if a.startswith(("--gpus", "--gres", "--num-gpus"))]
