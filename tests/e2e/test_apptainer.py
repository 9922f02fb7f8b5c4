"""With ``FETALGAN_IMAGE`` set, `slurm/ray_cluster.sh` runs every ray and python command as
``apptainer exec --nv --cleanenv --bind WORKDIR,SWEEP DIR,CACHE,EXTRA IMAGE CMD``. Apptainer
cannot be installed on these machines: a recorder stands in for it (harness/fake_apptainer.py),
checks and logs each command line, and runs the command natively in the environment
``--cleanenv`` would leave (only what the job passes as APPTAINERENV_*) on a PATH without the
venv, so the sweep only works if every command went through the wrapper and the job passed
every variable it needs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from harness.jobs import SCRIPT, SMOKE, VENV, job_env, mlflow_runs, ray_leftovers, sbatch_wait

pytestmark = pytest.mark.e2e

RECORDER = Path(__file__).parent / "harness" / "fake_apptainer.py"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture
def extra_data():
    """A data directory outside the work dir, bound through FETALGAN_BIND."""
    path = Path(tempfile.mkdtemp(prefix="fg-data-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_commands_run_through_apptainer_exec(slurm_single, workdir, e2e_cache, extra_data):
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    (bin_dir / "apptainer").symlink_to(RECORDER)
    image = workdir / "fetalgan.sif"
    image.write_bytes(os.urandom(4096))
    log = workdir / "apptainer.jsonl"
    env = job_env(
        slurm_single,
        workdir,
        e2e_cache,
        FETALGAN_IMAGE=str(image),
        FETALGAN_BIND=str(extra_data),
        FETALGAN_VENV="",
        FAKE_APPTAINER_LOG=str(log),
        FAKE_APPTAINER_PATH=str(VENV / "bin"),  # the image's environment, for the recorder
        PATH=f"{bin_dir}:{SYSTEM_PATH}",  # no fetalgan, ray or venv python outside the "image"
        PYTHONPATH="/host/site-packages",  # the host's: --cleanenv keeps it out of the image
    )
    job = sbatch_wait(slurm_single, workdir, ["--cpus-per-task=2", str(SCRIPT), str(SMOKE)], env)
    assert job.returncode == 0, job.describe()
    assert ray_leftovers(job.job_id) == []

    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["error"] for r in records if r["error"]] == []
    binds = ",".join(str(p) for p in (workdir, SMOKE.parent, e2e_cache, extra_data))
    prefix = ["exec", "--nv", "--cleanenv", "--bind", binds, str(image)]
    assert all(r["argv"][:6] == prefix for r in records), [r["argv"][:6] for r in records]
    commands = [r["argv"][6:] for r in records]
    # --cleanenv: the host's PYTHONPATH stays out; Ray's address and token come in, by name
    assert not any("PYTHONPATH" in r["passed"] for r in records)
    assert all({"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} <= set(r["passed"]) for r in records[1:])
    assert not any(arg.startswith("RAY_AUTH_TOKEN=") for r in records for arg in r["argv"])

    assert commands[0][:2] == ["python", "-c"] and commands[0][-1] == str(SMOKE)  # config
    head = ["ray", "start", "--block", "--num-cpus=2", "--num-gpus=0", "--disable-usage-stats",
            "--head"]  # fmt: skip
    # The head's srun step starts while the script already polls `ray status`: order varies.
    middle = commands[1:-1]
    starts = [c for c in middle if c[:2] == ["ray", "start"]]
    assert len(starts) == 1 and starts[0][: len(head)] == head, starts
    options = dict(arg.split("=", 1) for arg in starts[0][len(head) :])
    assert options["--include-dashboard"] == "false" and options["--node-ip-address"]
    port = int(options["--port"])  # the job's own block of ports, not Ray's default 6379
    assert port != 6379 and 20000 <= port < 32768
    for flag in ("--node-manager-port", "--object-manager-port", "--min-worker-port",
                 "--max-worker-port"):  # fmt: skip
        assert port < int(options[flag]) < port + 512, (flag, options)
    # Last: the node's own temp dir, made by mktemp in the step (outside the image).
    assert re.fullmatch(rf"--temp-dir=/\S*/ray-{job.job_id}\.\w{{10}}-0/r", starts[0][-1]), starts
    status = [c for c in middle if c[:2] != ["ray", "start"]]
    assert status and all(c == ["ray", "status", status[0][2]] for c in status), status
    assert status[0][2] == f"--address={options['--node-ip-address']}:{port}"
    assert commands[-1] == [
        "fetalgan",
        "sweep",
        str(SMOKE),
        "--storage",
        str(workdir / "ray_results"),
    ]

    # The runs record which image they ran in.
    _, _, children = mlflow_runs(env["MLFLOW_TRACKING_URI"], "smoke")
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    assert len(children) == 2
    for child in children:
        assert child.data.tags.get("container_image") == str(image)
        assert child.data.tags.get("container_image_sha256") == digest
