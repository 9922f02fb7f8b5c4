"""Start daemons by PID, poll for readiness, stop them by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class Daemon:
    """One background process started by the harness, its output in ``log``."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: dict | None = None):
        self.name = name
        self.argv = list(argv)
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM this process's group (it leads its own session, so the group is exactly
        what it started), SIGKILL the group after ``grace_s`` seconds."""
        if self.alive():
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._signal_group(signal.SIGKILL)  # children the leader left behind

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def wait_for(
    check: Callable[[], bool], timeout_s: float, what: str, *, daemons: Sequence[Daemon] = ()
) -> None:
    """Poll ``check`` every 0.2 s until it is true; fail naming ``what`` after ``timeout_s``,
    or at once if one of ``daemons`` died (with the end of its log)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return
        for daemon in daemons:
            if not daemon.alive():
                raise RuntimeError(
                    f"{daemon.name} exited with {daemon.proc.returncode} while waiting for "
                    f"{what}; end of {daemon.log}:\n{daemon.tail()}"
                )
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {d.log}\n{d.tail()}" for d in daemons)
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{logs}")
        time.sleep(0.2)


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append((int(entry.name), cmdline.strip()))
    return found
