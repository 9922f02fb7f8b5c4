"""Per-trial system metrics, sampled inside the trial process.

``SystemSampler`` is a daemon thread that, every ``interval_s`` seconds (default 2), measures:

- ``cpu_percent``: CPU use of this process and all its live child processes (data-loader
  workers, ...), with ``psutil.Process.cpu_percent`` semantics: 100 means one core busy, so a
  process using four cores reads 400. The window mean is time-weighted (CPU seconds used in
  the window divided by the wall seconds the window's samples cover).
- ``rss_mib``: resident set size of the same process tree in MiB (2**20 bytes), summed over
  the processes, so pages shared between a parent and its forked workers count once per
  process. ``rss_mib_max`` is the largest single sample in the window.
- ``gpu_utilization_percent``: ``torch.cuda.utilization(device)`` (percent of the last sample
  period in which a kernel ran on the device, as NVML reports it; device-wide, so other
  processes on the same GPU count too). Only when a CUDA ``device`` was given, CUDA is
  available and nvidia-ml-py (``pynvml``, the ``gpu`` extra) is installed; otherwise the key
  is left out, and a missing nvidia-ml-py is said once in a warning.
- ``gpu_memory_mib``: ``torch.cuda.memory_allocated(device)`` in MiB, memory held by this
  process's live tensors; and ``gpu_memory_reserved_mib_max``: the caching allocator's
  ``torch.cuda.max_memory_reserved(device)`` peak in MiB (since the process started or the
  trainer last reset peak stats; the sampler never resets it). Only for a CUDA ``device``.

``summary()`` returns the means over the samples taken since the previous ``summary()`` (or
the start), keys as above (only those measured), and starts a new window. The sweep's driver
calls it at each evaluation and logs the values under ``system/`` in MLflow (for example
``system/cpu_percent``) at that evaluation's step.

How: on Linux, one ``/proc/<pid>/stat`` read per process of the tree (children found through
``/proc/<pid>/task/*/children``): about 0.1 ms a sample, ten times cheaper than psutil, whose
child search reads every process on the node. Elsewhere psutil; without it, this process's
CPU from ``os.times()`` and no RSS. The only CUDA calls from the thread are the read-only
queries named above. Nothing here ever makes training fail: a probe that breaks drops its
keys. No Ray or MLflow import here (torch only when a ``device`` is given).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from fetalgan.extras import install_hint

try:
    import psutil
except Exception:  # only needed off Linux; never let its absence stop training
    psutil = None

log = logging.getLogger(__name__)

MIB = float(2**20)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except (OSError, ValueError):
        return None


class _ProcTree:
    """CPU seconds and RSS of this process plus its live descendants, from Linux ``/proc``.

    One ``/proc/<pid>/stat`` read per process; children come from
    ``/proc/<pid>/task/*/children`` (or, on kernels without it, from every process's ppid).
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._tick = float(os.sysconf("SC_CLK_TCK"))
        self._page = float(os.sysconf("SC_PAGE_SIZE"))
        if self._stat(self.pid) is None:
            raise OSError("no /proc/<pid>/stat")
        self._children_files = os.path.exists(f"/proc/{self.pid}/task/{self.pid}/children")

    def _stat(self, pid: int) -> tuple[int, float, float] | None:
        """``(ppid, cpu seconds, rss bytes)``; None when the process is gone."""
        text = _read(f"/proc/{pid}/stat")
        if not text:
            return None
        try:  # fields after "pid (comm)": comm may hold spaces and parentheses
            f = text[text.rindex(")") + 2 :].split()
            # f[0] is field 3 (state): ppid 4, utime 14, stime 15, rss 24 (pages)
            return int(f[1]), (int(f[11]) + int(f[12])) / self._tick, int(f[21]) * self._page
        except (ValueError, IndexError):
            return None

    def _children(self, pid: int) -> list[int]:
        out: list[int] = []
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return out  # exited meanwhile
        for tid in tids:  # a child is listed under the thread that forked it
            text = _read(f"/proc/{pid}/task/{tid}/children")
            if text:
                out.extend(int(c) for c in text.split())
        return out

    def _descendants(self) -> list[int]:
        if self._children_files:
            seen: list[int] = []
            todo = self._children(self.pid)
            while todo:
                pid = todo.pop()
                seen.append(pid)
                todo.extend(self._children(pid))
            return seen
        kids: dict[int, list[int]] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                st = self._stat(int(name))
                if st is not None:
                    kids.setdefault(st[0], []).append(int(name))
        seen, todo = [], list(kids.get(self.pid, ()))
        while todo:
            pid = todo.pop()
            seen.append(pid)
            todo.extend(kids.get(pid, ()))
        return seen

    def read(self) -> tuple[dict[int, float], float | None]:
        """``({pid: cpu seconds}, rss bytes)`` for the tree; pids that vanish are skipped."""
        cpu: dict[int, float] = {}
        rss = 0.0
        for pid in (self.pid, *self._descendants()):
            st = self._stat(pid)
            if st is not None:
                cpu[pid] = st[1]
                rss += st[2]
        return cpu, rss


class _PsutilTree:
    """The same through psutil, where there is no ``/proc`` (macOS, for instance)."""

    def __init__(self) -> None:
        self._me = psutil.Process()

    def read(self) -> tuple[dict[int, float], float | None]:
        cpu: dict[int, float] = {}
        rss = 0.0
        for proc in (self._me, *self._me.children(recursive=True)):
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    mem = proc.memory_info()
            except (psutil.Error, OSError):
                continue  # exited meanwhile
            cpu[proc.pid] = t.user + t.system
            rss += mem.rss
        return cpu, rss


class _SelfTimes:
    """Last resort: this process's CPU time from ``os.times()``; no RSS."""

    def read(self) -> tuple[dict[int, float], float | None]:
        t = os.times()
        return {os.getpid(): t.user + t.system}, None


def _process_probe() -> Any:
    """The best available reader: ``/proc``, else psutil, else ``os.times()``."""
    for make in (_ProcTree, _PsutilTree if psutil is not None else None, _SelfTimes):
        if make is None:
            continue
        try:
            return make()
        except Exception:
            log.debug("sysmetrics: %s unavailable", make.__name__, exc_info=True)
    return None


class SystemSampler:
    """Sample this process tree's CPU and memory (and a CUDA device's) in a daemon thread.

    ``with SystemSampler(device=device) as sampler: ... sampler.summary()``, or
    ``start()`` / ``stop()``. See the module docstring for the keys and units.
    """

    def __init__(self, interval_s: float = 2.0, device: Any = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = float(interval_s)
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None

        self._tree: Any = _process_probe()

        # CUDA: decided here, in the caller's thread, so the sampler thread only queries.
        self._cuda_index: int | None = None
        self._gpu_util_ok = False
        self._torch = None
        if device is not None:
            try:
                import torch

                dev = torch.device(device)
                if dev.type == "cuda" and torch.cuda.is_available():
                    self._torch = torch
                    index = dev.index
                    if index is None:  # "cuda": the current device, without initialising CUDA
                        index = torch.cuda.current_device() if torch.cuda.is_initialized() else 0
                    self._cuda_index = index
                    self._gpu_util_ok = True
            except Exception:
                log.debug("sysmetrics: no GPU metrics", exc_info=True)

        self._last_cpu: dict[int, float] | None = None
        self._last_wall = 0.0
        self._reset_window()

    # -- window -----------------------------------------------------------------------------

    def _reset_window(self) -> None:
        self._n = 0
        self._cpu_s = 0.0
        self._wall_s = 0.0
        self._rss_sum = 0.0
        self._rss_n = 0
        self._rss_max = 0.0
        self._gpu_util_sum = 0.0
        self._gpu_util_n = 0
        self._gpu_mem_sum = 0.0
        self._gpu_mem_n = 0
        self._gpu_reserved_max: float | None = None

    def _prime(self) -> None:
        """Set the CPU baseline (caller holds the lock)."""
        if self._tree is None:
            return
        try:
            self._last_cpu, _ = self._tree.read()
            self._last_wall = time.monotonic()
        except Exception:
            log.debug("sysmetrics: prime failed", exc_info=True)

    def _sample(self) -> None:
        """Take one sample into the current window (caller holds the lock)."""
        self._n += 1
        if self._tree is not None:
            try:
                cpu, rss = self._tree.read()
                now = time.monotonic()
            except Exception:
                log.debug("sysmetrics: process sample failed", exc_info=True)
            else:
                if self._last_cpu is not None:
                    used = 0.0
                    for pid, seconds in cpu.items():
                        before = self._last_cpu.get(pid)
                        # a new child's whole CPU time falls in this interval (it is younger
                        # than the previous sample); a gone child simply stops counting
                        if before is None or seconds < before:  # pid new (or reused)
                            used += seconds
                        else:
                            used += seconds - before
                    if now > self._last_wall:
                        self._cpu_s += max(used, 0.0)
                        self._wall_s += now - self._last_wall
                self._last_cpu, self._last_wall = cpu, now
                if rss is not None:
                    mib = rss / MIB
                    self._rss_sum += mib
                    self._rss_n += 1
                    self._rss_max = max(self._rss_max, mib)
        if self._cuda_index is not None:
            torch = self._torch
            if self._gpu_util_ok:
                try:
                    self._gpu_util_sum += float(torch.cuda.utilization(self._cuda_index))
                    self._gpu_util_n += 1
                except ModuleNotFoundError:  # torch reads NVML through nvidia-ml-py
                    self._gpu_util_ok = False
                    log.warning(
                        "sysmetrics: no GPU utilisation (system/gpu_utilization_percent): "
                        "nvidia-ml-py is not installed; %s",
                        install_hint("gpu"),
                    )
                except Exception:  # NVML error: skip that key from now on
                    self._gpu_util_ok = False
                    log.debug("sysmetrics: no GPU utilisation", exc_info=True)
            try:
                self._gpu_mem_sum += torch.cuda.memory_allocated(self._cuda_index) / MIB
                self._gpu_mem_n += 1
                reserved = torch.cuda.max_memory_reserved(self._cuda_index) / MIB
                self._gpu_reserved_max = max(self._gpu_reserved_max or 0.0, reserved)
            except Exception:
                log.debug("sysmetrics: no GPU memory", exc_info=True)

    def sample(self) -> None:
        """Take one sample now, in the calling thread (the sampler thread does this itself)."""
        with self._lock:
            if self._last_cpu is None:
                self._prime()
            self._sample()

    def summary(self) -> dict[str, float]:
        """Means since the previous ``summary()`` (or the start); then start a new window.

        With no sample in the window yet, one is taken now, so the result is never empty
        while process metrics work. ``cpu_percent`` needs a previous sample or ``start()``.
        """
        with self._lock:
            if self._n == 0:
                if self._last_cpu is None:
                    self._prime()
                self._sample()
            out: dict[str, float] = {}
            if self._wall_s > 0:
                out["cpu_percent"] = 100.0 * self._cpu_s / self._wall_s
            if self._rss_n:
                out["rss_mib"] = self._rss_sum / self._rss_n
                out["rss_mib_max"] = self._rss_max
            if self._gpu_util_n:
                out["gpu_utilization_percent"] = self._gpu_util_sum / self._gpu_util_n
            if self._gpu_mem_n:
                out["gpu_memory_mib"] = self._gpu_mem_sum / self._gpu_mem_n
            if self._gpu_reserved_max is not None:
                out["gpu_memory_reserved_mib_max"] = self._gpu_reserved_max
            self._reset_window()
            return out

    # -- thread -----------------------------------------------------------------------------

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval_s):
            try:
                with self._lock:
                    self._sample()
            except Exception:  # never let the thread die noisily
                log.debug("sysmetrics: sample failed", exc_info=True)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> SystemSampler:
        """Set the CPU baseline and start sampling every ``interval_s``; no-op if running."""
        if self.running:
            return self
        with self._lock:
            self._prime()
        self._stop_event = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop_event,), name="fetalgan-sysmetrics", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and join it (returns as soon as an in-flight sample finishes)."""
        self._stop_event.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> SystemSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
