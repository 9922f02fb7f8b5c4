#!/usr/bin/env python3
"""A stand-in for ``apptainer`` on machines without it: it records each command line, checks
that it has the shape ``slurm/ray_cluster.sh`` must produce, and runs the command natively.

    apptainer exec --nv --bind SRC[,SRC...] IMAGE.sif COMMAND [ARGS...]

Checks: ``exec`` with ``--nv``; ``--bind`` lists absolute, existing, distinct paths; IMAGE is
an existing ``.sif`` file. A violation is recorded too and exits 97. The command then runs with
``$FAKE_APPTAINER_PATH`` in front of PATH (standing in for the image's own environment).
What this cannot show: that the image starts, that ``--nv`` exposes GPUs, that the bound paths
are visible inside it.

Environment: ``FAKE_APPTAINER_LOG`` (JSON lines: {"argv": [...], "error": "..."}),
``FAKE_APPTAINER_PATH``.
"""

from __future__ import annotations

import json
import os
import sys


def problem(argv: list[str]) -> str | None:
    if argv[:2] != ["exec", "--nv"]:
        return "expected `exec --nv` first"
    if len(argv) < 6 or argv[2] != "--bind":
        return "expected `--bind PATHS IMAGE COMMAND` after `exec --nv`"
    paths = argv[3].split(",")
    for path in paths:
        if not os.path.isabs(path) or not os.path.exists(path):
            return f"bind path {path!r} is not an existing absolute path"
    if len(set(paths)) != len(paths):
        return f"bind paths repeat: {argv[3]}"
    image = argv[4]
    if not image.endswith(".sif") or not os.path.isfile(image):
        return f"image {image!r} is not an existing .sif file"
    return None


def main() -> None:
    argv = sys.argv[1:]
    error = problem(argv)
    with open(os.environ["FAKE_APPTAINER_LOG"], "a") as log:
        log.write(json.dumps({"argv": argv, "error": error}) + "\n")
    if error:
        print(f"fake apptainer: {error}: {argv}", file=sys.stderr)
        sys.exit(97)
    image_path = os.environ.get("FAKE_APPTAINER_PATH")
    if image_path:
        os.environ["PATH"] = image_path + os.pathsep + os.environ["PATH"]
    command = argv[5:]
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
