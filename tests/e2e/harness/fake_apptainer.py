#!/usr/bin/env python3
"""A stand-in for ``apptainer`` on machines without it: it records each command line, checks
that it has the shape ``slurm/ray_cluster.sh`` must produce, and runs the command natively.

    apptainer exec --nv --cleanenv --bind SRC[,SRC...] IMAGE.sif COMMAND [ARGS...]

Checks: ``exec`` with ``--nv`` and ``--cleanenv``; ``--bind`` lists absolute, existing,
distinct paths; IMAGE is an existing ``.sif`` file. A violation is recorded too and exits 97.
The command then runs as ``--cleanenv`` would run it: in an environment holding only what
``APPTAINERENV_NAME`` variables pass (as ``NAME``) plus the runtime's own ``HOME``, ``LANG``
and ``TERM``, with ``$FAKE_APPTAINER_PATH`` in front of a system PATH (standing in for the
image's own environment). So a variable the job forgets to pass is missing inside, and one of
the host's (``PYTHONPATH``) does not leak in. What this cannot show: that the image starts,
that ``--nv`` exposes GPUs, that the bound paths are visible inside it.

Environment: ``FAKE_APPTAINER_LOG`` (JSON lines: {"argv": [...], "error": "...", "passed":
[names passed in]}), ``FAKE_APPTAINER_PATH``.
"""

from __future__ import annotations

import json
import os
import sys

PREFIX = "APPTAINERENV_"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def problem(argv: list[str]) -> str | None:
    if argv[:3] != ["exec", "--nv", "--cleanenv"]:
        return "expected `exec --nv --cleanenv` first"
    if len(argv) < 7 or argv[3] != "--bind":
        return "expected `--bind PATHS IMAGE COMMAND` after `exec --nv --cleanenv`"
    paths = argv[4].split(",")
    for path in paths:
        if not os.path.isabs(path) or not os.path.exists(path):
            return f"bind path {path!r} is not an existing absolute path"
    if len(set(paths)) != len(paths):
        return f"bind paths repeat: {argv[4]}"
    image = argv[5]
    if not image.endswith(".sif") or not os.path.isfile(image):
        return f"image {image!r} is not an existing .sif file"
    return None


def clean_environment() -> dict[str, str]:
    """What ``--cleanenv`` leaves: the APPTAINERENV_ variables (prefix removed) and the
    runtime's HOME, LANG and TERM; PATH the image's."""
    env = {k[len(PREFIX) :]: v for k, v in os.environ.items() if k.startswith(PREFIX)}
    for name in ("HOME", "LANG", "TERM"):
        if name in os.environ:
            env.setdefault(name, os.environ[name])
    image_path = os.environ.get("FAKE_APPTAINER_PATH")
    env["PATH"] = (image_path + os.pathsep if image_path else "") + SYSTEM_PATH
    return env


def main() -> None:
    argv = sys.argv[1:]
    error = problem(argv)
    env = clean_environment()
    with open(os.environ["FAKE_APPTAINER_LOG"], "a") as log:
        log.write(json.dumps({"argv": argv, "error": error, "passed": sorted(env)}) + "\n")
    if error:
        print(f"fake apptainer: {error}: {argv}", file=sys.stderr)
        sys.exit(97)
    command = argv[6:]
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main()
