"""A real Slurm cluster on this machine: munged, slurmctld and one slurmd per node, all under
one temporary directory, started and stopped by PID.

Two layouts:

- ``single``: one node named after ``hostname -s`` at 127.0.0.1 with every CPU;
- ``two_node``: nodes ``node1`` and ``node2`` at 10.77.0.1 and 10.77.0.2, each slurmd inside
  its own network namespace (see ``netns.py``); slurmctld in the root namespace at
  10.77.0.254. A ``--nodes=2`` job's batch script runs in node1's namespace, so a Ray head
  there and a worker on node2 talk over the bridge like two hosts.

Config lines are the ones recorded in DESIGN.md as working with Debian's Slurm 22.05:
proctrack/linuxproc, task/none, select/cons_tres with CR_CPU, munge with an explicit socket,
``MinJobAge=4`` so ``sbatch --wait`` polls every 2 s.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .netns import NODES, SERVER_IP, Namespaces
from .procs import Daemon, wait_for

SLURM_PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scancel")


def missing_programs() -> list[str]:
    """The Slurm and munge programs not on PATH (installed by ``.ci/run``)."""
    return [p for p in SLURM_PROGRAMS if shutil.which(p) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@dataclass
class SlurmCluster:
    root: Path  # every config, state, spool, pid and log file lives here
    nodes: list[str]  # Slurm node names
    node_ips: dict[str, str]  # node name -> address
    daemons: list[Daemon] = field(default_factory=list)
    namespaces: Namespaces | None = None

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for Slurm client commands (``SLURM_CONF``) plus ``extra``."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        env.update(extra)
        return env

    def run(
        self, *argv: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        """Run a Slurm client command (``squeue``, ``scancel``...) against this cluster."""
        return subprocess.run(
            argv, env=self.env(), capture_output=True, text=True, check=check, timeout=timeout
        )

    def node_states(self) -> dict[str, str]:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %T", check=False).stdout
        return dict(line.split() for line in out.splitlines() if len(line.split()) == 2)

    def job_state(self, job_id: str) -> str:
        """The job's state from ``scontrol`` (``PENDING``, ``RUNNING``, ``COMPLETED``...);
        empty once Slurm has forgotten it (``MinJobAge``)."""
        out = self.run("scontrol", "-o", "show", "job", job_id, check=False).stdout
        for item in out.split():
            if item.startswith("JobState="):
                return item.split("=", 1)[1]
        return ""

    def logs(self) -> str:
        parts = []
        for log in sorted((self.root / "log").glob("*.log")):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            parts.append(f"--- {log}\n{tail}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, wait for them to end, then stop the daemons in reverse order and
        delete the namespaces. Safe to call twice."""
        alive = [d for d in self.daemons if d.alive()]
        if any(d.name == "slurmctld" for d in alive):
            self.run("scancel", "--full", "--user=root", check=False)

            def no_jobs() -> bool:
                out = self.run("squeue", "-h", "-t", "all", "-o", "%T", check=False).stdout
                return not any(s in out for s in ("RUNNING", "COMPLETING", "PENDING"))

            try:
                wait_for(no_jobs, 90, "jobs to end before stopping Slurm")
            except TimeoutError:
                pass  # the daemons are stopped below regardless; their steps die with them
        for daemon in reversed(self.daemons):
            daemon.stop()
        self.daemons.clear()
        if self.namespaces is not None:
            self.namespaces.delete()
            self.namespaces = None


def _write_munge(root: Path) -> tuple[Path, list[str]]:
    """A munge key (mode 0400 in a 0755 dir) and the munged command line."""
    munge = root / "munge"
    munge.mkdir(mode=0o755)
    os.chmod(munge, 0o755)
    key = munge / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    os.chmod(key, 0o400)
    socket_path = munge / "munge.socket"
    argv = [
        "munged",
        "--foreground",
        "--force",
        f"--socket={socket_path}",
        f"--key-file={key}",
        f"--pid-file={munge / 'munged.pid'}",
        f"--log-file={root / 'log' / 'munged.log'}",
        f"--seed-file={munge / 'munged.seed'}",
    ]
    return socket_path, argv


def _slurm_conf(root: Path, *, controller: str, munge_socket: Path, node_lines: list[str]) -> str:
    ctld_port, slurmd_port = free_port(), free_port()
    lines = [
        "ClusterName=fetalgan-e2e",
        f"SlurmctldHost={controller}",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # cred_expire: a requeued job may restart after 10 s instead of the default 120 s
        f"AuthInfo=socket={munge_socket},cred_expire=10",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=2,bf_interval=2",  # start requeued jobs promptly
        "ReturnToService=2",
        "MailProg=/bin/true",
        "MinJobAge=4",  # sbatch --wait polls every 2 s instead of at 2, 10, 42, 74... s
        "KillWait=30",
        "JobRequeue=1",
        "MpiDefault=none",
        "JobCompType=jobcomp/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool' / '%n'}",
        f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'run' / 'slurmd-%n.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd-%n.log'}",
        *node_lines,
        "PartitionName=e2e Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"


def start_cluster(layout: str = "single", root: Path | None = None) -> SlurmCluster:
    """Start a Slurm cluster (``single`` or ``two_node``) and wait until every node is idle.

    The caller must call ``stop()`` (the fixtures do, on every exit path)."""
    if layout not in ("single", "two_node"):
        raise ValueError(f"layout: unknown value {layout!r}; expected one of single, two_node")
    # Short path: munge's socket and Slurm's spool sockets are AF_UNIX (≤ 107 characters).
    root = Path(root or tempfile.mkdtemp(prefix="fg-slurm-", dir="/tmp"))
    for sub in ("state", "spool", "run", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    hostname = socket.gethostname().split(".")[0]
    if layout == "single":
        nodes = [hostname]
        node_ips = {hostname: "127.0.0.1"}
        node_lines = [f"NodeName={hostname} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN"]
        controller = f"{hostname}(127.0.0.1)"
    else:
        nodes = list(NODES)
        node_ips = dict(NODES)
        node_lines = [
            f"NodeName={name} NodeHostname={name} NodeAddr={ip} CPUs=1 State=UNKNOWN"
            for name, ip in NODES.items()
        ]
        controller = f"{hostname}({SERVER_IP})"
    cluster = SlurmCluster(root=root, nodes=nodes, node_ips=node_ips)
    try:
        munge_socket, munged_argv = _write_munge(root)
        cluster.conf.write_text(
            _slurm_conf(
                root, controller=controller, munge_socket=munge_socket, node_lines=node_lines
            )
        )
        env = cluster.env()
        munged = Daemon("munged", munged_argv, root / "log" / "munged.out", env)
        cluster.daemons.append(munged)
        wait_for(munge_socket.exists, 30, "munged's socket", daemons=[munged])
        if layout == "two_node":
            cluster.namespaces = Namespaces.create()
        ctld = Daemon("slurmctld", ["slurmctld", "-D", "-i"], root / "log" / "slurmctld.out", env)
        cluster.daemons.append(ctld)
        for name in nodes:
            argv = ["slurmd", "-D", "-N", name]
            if cluster.namespaces is not None:
                argv = cluster.namespaces.enter(name) + argv
            cluster.daemons.append(
                Daemon(f"slurmd {name}", argv, root / "log" / f"{name}.out", env)
            )

        def all_idle() -> bool:
            states = cluster.node_states()
            return all(states.get(n, "").startswith("idle") for n in nodes)

        wait_for(all_idle, 60, f"nodes {', '.join(nodes)} to be idle", daemons=cluster.daemons)
    except BaseException as err:
        logs = cluster.logs()
        cluster.stop()
        if isinstance(err, (RuntimeError, TimeoutError)):
            raise RuntimeError(f"{err}\n{logs}") from err
        raise
    return cluster
