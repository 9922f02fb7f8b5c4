"""What a sweep leaves on disk, per trial, in units of one full checkpoint.

    .venv/bin/python bench/disk_use.py [SWEEP.yaml] [--set KEY=VALUE ...] [--json OUT]

Runs the sweep (default ``sweeps/demo.yaml``) as ``fetalgan sweep`` would, into a fresh Tune
storage and a fresh sqlite MLflow store in a temporary folder, then reports the bytes on disk
under the experiment's Tune storage and its MLflow artefacts, divided by the number of trials
and by the size of one full checkpoint (networks + optimiser states + RNG; the ``checkpoint.pt``
a trial resumes from). Goal: <= 2.5 (one full state for resuming, the best and last weights
for using). Sizes, not times: the figure does not depend on what else the machine is doing.
``--set`` passes through to the sweep (``--set resolution=128 --set num_samples=2``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", nargs="?", default=str(REPO / "sweeps" / "demo.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    from fetalgan.files import disk_usage, human_bytes
    from fetalgan.sweep import run_sweep

    work = Path(tempfile.mkdtemp(prefix="fetalgan-disk-"))
    os.environ.setdefault("FETALGAN_CACHE", str(work / "cache"))
    summary = run_sweep(
        args.sweep,
        storage=work / "ray_results",
        tracking_uri=f"sqlite:///{work}/mlruns.db",
        overrides=args.set,
        verbose=0,
    )
    exp_dir = Path(summary["experiment_path"])
    storage_bytes = disk_usage(exp_dir)
    artifacts = summary["disk"]["artifacts"]
    artifact_bytes = disk_usage(artifacts["path"]) if artifacts else 0
    fulls = sorted(exp_dir.glob("trial_*/checkpoint_*/checkpoint.pt"))
    if not fulls:
        print("disk_use: no trial left a checkpoint", file=sys.stderr)
        return 1
    full = max(p.stat().st_size for p in fulls)
    trials = summary["num_trials"]
    figures = {
        "sweep": args.sweep,
        "overrides": args.set,
        "trials": trials,
        "full_checkpoint_bytes": full,
        "storage_bytes": storage_bytes,
        "artifact_bytes": artifact_bytes,
        "bytes_per_trial": (storage_bytes + artifact_bytes) / trials,
        "ratio": (storage_bytes + artifact_bytes) / trials / full,
        "storage_ratio": storage_bytes / trials / full,
        "artifact_ratio": artifact_bytes / trials / full,
    }
    print(
        f"\n== disk use of {Path(args.sweep).name} {' '.join(args.set)}: {trials} trials, "
        f"one full checkpoint {human_bytes(full)}\n"
        f"   Tune storage     {human_bytes(storage_bytes):>10}  "
        f"({figures['storage_ratio']:.2f} full checkpoints per trial)\n"
        f"   MLflow artefacts {human_bytes(artifact_bytes):>10}  "
        f"({figures['artifact_ratio']:.2f} per trial)\n"
        f"   per trial        {human_bytes(figures['bytes_per_trial']):>10}  "
        f"= {figures['ratio']:.2f} full checkpoints (goal <= 2.5)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
