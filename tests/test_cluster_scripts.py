"""slurm/ray_cluster.sh and mlflow/server.sh without a cluster: syntax, bad use gives a clear
message and a non-zero exit, and every environment variable they read is documented at their
top. (They run for real under Slurm in tests/e2e.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY_CLUSTER = REPO / "slurm" / "ray_cluster.sh"
SERVER = REPO / "mlflow" / "server.sh"


def run(script: Path, *args: str, env: dict | None = None, cwd: Path | None = None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
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
    assert "--signal=B:USR1@120" in directives  # B: the batch shell, which forwards it


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
    env | grep -E '^RAY_(AUTH|ADDRESS)' | sort >"$REC/env-ray-$$"
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
for private in /tmp/fetalgan-"$SLURM_JOB_ID".*; do
    stat -c '%a' "$private" "$private/ray_token" >"$REC/private"
done
"""


def recorded_job(tmp_path: Path, nodes: list[str], **env: str):
    """ray_cluster.sh sweeps/smoke.yaml as a job on ``nodes`` (the first is the head), with the
    recorders above on PATH; returns (result, the recorder's directory, the job id)."""
    rec, fake_bin, venv_bin = tmp_path / "rec", tmp_path / "bin", tmp_path / "venv" / "bin"
    for path in (rec, fake_bin, venv_bin):
        path.mkdir(parents=True)
    for name, text in RECORDERS.items():
        (fake_bin / name).write_text(text)
        (fake_bin / name).chmod(0o755)
    (venv_bin / "fetalgan").write_text(DRIVER)
    (venv_bin / "python").write_text(f'#!/bin/bash\nexec {REPO}/.venv/bin/python "$@"\n')
    for exe in venv_bin.iterdir():
        exe.chmod(0o755)
    job_id = str(900000 + os.getpid() % 99999)
    settings = {
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
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
    assert (rec / "private").read_text().split() == ["700", "600"]
    assert not list(Path("/tmp").glob(f"fetalgan-{job_id}.*"))
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
    assert _env_file(rec / "env-driver")["RAY_ADDRESS"] == "10.1.0.7:6379"
    assert "--address=10.1.0.7:6379" in (rec / "commands").read_text()

    result, rec, _ = recorded_job(tmp_path / "iface", ["n1", "n2"], FETALGAN_RAY_IFACE="ib1")
    assert result.returncode == 0, result.stderr
    assert _env_file(rec / "env-driver")["RAY_ADDRESS"] == "10.9.9.9:6379"

    result, rec, _ = recorded_job(tmp_path / "bad", ["n1", "n2"], FETALGAN_RAY_IFACE="eth7")
    assert result.returncode == 2
    assert "no IPv4 address for the Ray head on interface eth7" in result.stderr
    assert not (rec / "commands").exists() or "ray start" not in (rec / "commands").read_text()


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
    env = {
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
    result = run(RAY_CLUSTER, str(sweep), env=env, cwd=tmp_path)
    assert result.returncode != 0 and "Ray head on n1" in result.stdout, result.stderr
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
