"""Debian's PostgreSQL as a daemon for one test, started the way the Slurm harness starts
slurmd: a fresh cluster (``initdb``) in a temp dir, ``postgres`` in the foreground by PID,
readiness polled with ``pg_isready``, stopped by PID. PostgreSQL refuses to run as root, so
under root every PostgreSQL program runs as the ``postgres`` user Debian's package creates."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from .procs import Daemon, wait_for
from .slurm import free_port

APT_POSTGRES = "apt-get install -y --no-install-recommends postgresql"


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` with a ``postgres`` in it (Debian's layout)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


def _as_postgres() -> list[str]:
    """The prefix that runs a command as a user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return []
    pwd.getpwnam("postgres")  # KeyError: the package's user is missing
    return ["runuser", "-u", "postgres", "--"]


class Postgres:
    """A running PostgreSQL on 127.0.0.1:``port`` with database ``mlflow`` owned by user
    ``mlflow`` (password auth); ``uri`` is the SQLAlchemy URI MLflow takes."""

    def __init__(self, root: Path | None = None):
        bindir = postgres_bin()
        if bindir is None:
            raise FileNotFoundError(f"PostgreSQL not installed: {APT_POSTGRES}")
        self.root = Path(root or tempfile.mkdtemp(prefix="fg-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.uri = f"postgresql://mlflow:{self.password}@127.0.0.1:{self.port}/mlflow"
        prefix = _as_postgres()
        if prefix:
            shutil.chown(self.root, "postgres", "postgres")
        self.root.chmod(0o700)
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        if prefix:
            shutil.chown(password_file, "postgres", "postgres")
        password_file.chmod(0o600)
        run = [*prefix, str(bindir / "initdb"), "-D", str(self.data), "-U", "mlflow"]
        run += ["--auth=scram-sha-256", f"--pwfile={password_file}", "-E", "UTF8"]
        result = subprocess.run(run, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stdout}\n{result.stderr}")
        argv = [*prefix, str(bindir / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        argv += ["-h", "127.0.0.1", "-k", str(self.root), "-c", "max_connections=300"]
        self.daemon = Daemon("postgres", argv, self.root / "postgres.log")
        self.env = {**os.environ, "PGPASSWORD": self.password}
        self._bindir = bindir
        try:
            wait_for(self._ready, 60, f"PostgreSQL on port {self.port}", daemons=[self.daemon])
            self.sql("CREATE DATABASE mlflow OWNER mlflow", database="postgres")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        probe = [str(self._bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(probe, timeout=10).returncode == 0

    def sql(self, statement: str, *, database: str = "mlflow") -> str:
        """Run one SQL statement with psql as user mlflow; its unaligned output."""
        argv = [str(self._bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port)]
        argv += ["-U", "mlflow", "-d", database, "-At", "-v", "ON_ERROR_STOP=1", "-c", statement]
        result = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"psql {statement!r}: {result.stderr}")
        return result.stdout.strip()

    def stop(self) -> None:
        """Fast shutdown (open client connections do not hold it up), then by PID."""
        if self.daemon.alive():  # runuser forwards no signal: the group gets it
            self.daemon._signal_group(signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                self.daemon.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self.daemon.stop()
        shutil.rmtree(self.root, ignore_errors=True)
