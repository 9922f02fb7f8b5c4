import contextlib
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fetalgan import sysmetrics
from fetalgan.sysmetrics import SystemSampler

GPU_KEYS = {"gpu_utilization_percent", "gpu_memory_mib", "gpu_memory_reserved_mib_max"}
MIB = 2**20


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


@contextlib.contextmanager
def true_cpu(children: bool = False):
    """This process's (or its reaped children's) real CPU percent over the block, from os.times."""
    out = {}

    def cpu() -> float:
        t = os.times()
        return t.children_user + t.children_system if children else t.user + t.system

    c0, t0 = cpu(), time.perf_counter()
    yield out
    out["percent"] = 100 * (cpu() - c0) / (time.perf_counter() - t0)


def assert_busy(measured: float, truth: dict) -> None:
    """A busy loop reads > 20 % (when the machine gives it 40 % or more) and near the truth.

    Other processes on a loaded machine can take most of a core from the loop, so the bound
    follows the CPU it really got; a sampler that misses it (or its child) still fails.
    """
    assert min(20.0, truth["percent"] / 2) < measured < 1.5 * truth["percent"] + 10


def test_busy_loop_measures_cpu_and_rss():
    with true_cpu() as truth, SystemSampler(interval_s=0.05) as sampler:
        busy(0.5)
        s = sampler.summary()
    assert_busy(s["cpu_percent"], truth)
    assert s["rss_mib"] > 10
    assert s["rss_mib_max"] >= s["rss_mib"]
    assert not GPU_KEYS & s.keys()


def test_rss_grows_with_a_200_mib_array():
    # interval 60: only the synchronous samples taken by summary() count, so no timing enters
    with SystemSampler(interval_s=60) as sampler:
        before = sampler.summary()
        big = np.ones(200 * MIB, dtype=np.uint8)  # ones, not zeros: the pages are touched
        after = sampler.summary()
        del big
    assert after["rss_mib"] - before["rss_mib"] > 100
    assert after["rss_mib_max"] - before["rss_mib_max"] > 100


def test_summary_resets_the_window():
    with SystemSampler(interval_s=60) as sampler:
        big = np.ones(200 * MIB, dtype=np.uint8)
        first = sampler.summary()
        del big
        second = sampler.summary()
    # the max and the mean both forget the first window's big sample
    assert first["rss_mib_max"] - second["rss_mib_max"] > 100
    assert first["rss_mib"] - second["rss_mib"] > 100

    with SystemSampler(interval_s=0.05) as sampler:
        with true_cpu() as truth:
            busy(0.5)
            hot = sampler.summary()
        time.sleep(0.5)
        idle = sampler.summary()
    assert_busy(hot["cpu_percent"], truth)
    assert idle["cpu_percent"] < hot["cpu_percent"] / 2


BACKENDS = ["proc", "proc-ppid-scan", "psutil", "times"]


def probe(backend: str):
    """Force one process probe (the default on Linux is ``proc``)."""
    if backend.startswith("proc"):
        if not os.path.exists("/proc/self/stat"):
            pytest.skip("needs Linux /proc")
        tree = sysmetrics._ProcTree()
        if backend == "proc-ppid-scan":  # kernels without /proc/<pid>/task/<tid>/children
            tree._children_files = False
        return tree
    if backend == "psutil":
        if sysmetrics.psutil is None:
            pytest.skip("psutil not installed")
        return sysmetrics._PsutilTree()
    return sysmetrics._SelfTimes()


def test_default_probe():
    tree = SystemSampler()._tree
    if os.path.exists("/proc/self/stat"):
        assert isinstance(tree, sysmetrics._ProcTree)
    else:
        assert tree is not None


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_measure_a_busy_loop(backend):
    sampler = SystemSampler(interval_s=0.05)
    sampler._tree = probe(backend)
    with true_cpu() as truth, sampler:
        busy(0.5)
        s = sampler.summary()
    assert_busy(s["cpu_percent"], truth)
    if backend == "times":
        assert "rss_mib" not in s  # os.times() knows no RSS
    else:
        assert s["rss_mib"] > 10


@pytest.mark.parametrize("backend", ["proc", "proc-ppid-scan", "psutil"])
def test_child_processes_count(backend):
    code = "import time\nend = time.time() + 3\nwhile time.time() < end: pass\n"
    sampler = SystemSampler(interval_s=0.05)
    sampler._tree = probe(backend)
    with sampler:
        alone = sampler.summary()["rss_mib"]
        with true_cpu(children=True) as truth:
            child = subprocess.Popen([sys.executable, "-c", code])
            try:
                time.sleep(1.0)  # this process idles; only the child burns CPU
                s = sampler.summary()
            finally:
                child.kill()
                child.wait()
    assert_busy(s["cpu_percent"], truth)
    assert s["rss_mib_max"] - alone > 3  # a Python interpreter's RSS on top


def test_stop_returns_promptly():
    sampler = SystemSampler(interval_s=60).start()
    assert sampler.running
    t0 = time.perf_counter()
    sampler.stop()
    assert time.perf_counter() - t0 < 1.0
    assert not sampler.running
    assert not any(t.name == "fetalgan-sysmetrics" for t in threading.enumerate())
    sampler.stop()  # idempotent


def test_summary_never_empty_and_sampling_continues_across_windows():
    sampler = SystemSampler()
    assert "rss_mib" in sampler.summary()  # not started: a synchronous sample
    with SystemSampler(interval_s=0.02) as sampler:
        for _ in range(3):
            time.sleep(0.2)
            s = sampler.summary()
            assert {"cpu_percent", "rss_mib", "rss_mib_max"} <= s.keys()


def test_gpu_keys_only_with_cuda():
    torch = pytest.importorskip("torch")
    for device in (None, "cpu", torch.device("cpu")):
        with SystemSampler(interval_s=0.05, device=device) as sampler:
            time.sleep(0.1)
            assert not GPU_KEYS & sampler.summary().keys()
    with SystemSampler(interval_s=0.05, device="cuda") as sampler:  # must not raise on CPU
        time.sleep(0.1)
        s = sampler.summary()
    if torch.cuda.is_available():
        assert "gpu_memory_mib" in s
    else:
        assert not GPU_KEYS & s.keys()


def test_a_failing_probe_never_raises():
    with SystemSampler(interval_s=0.01) as sampler:

        def broken():
            raise OSError("gone")

        sampler._tree.read = broken
        time.sleep(0.1)
        assert sampler.running
        assert sampler.summary() == {}


def test_concurrent_summaries_are_safe():
    errors = []
    with SystemSampler(interval_s=0.001) as sampler:

        def hammer():
            try:
                for _ in range(200):
                    sampler.summary()
            except Exception as e:  # pragma: no cover - the failure being tested for
                errors.append(e)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


class FakeCuda:
    """Stands in for ``torch.cuda``: records which thread called what."""

    def __init__(self, utilization):
        self._utilization = utilization
        self.calls = []

    def _log(self, name, device=None):
        self.calls.append((name, device, threading.current_thread().name))

    def is_available(self):
        self._log("is_available")
        return True

    def is_initialized(self):
        self._log("is_initialized")
        return True

    def current_device(self):
        self._log("current_device")
        return 3

    def utilization(self, device):
        self._log("utilization", device)
        return self._utilization(device)

    def memory_allocated(self, device):
        self._log("memory_allocated", device)
        return 512 * MIB

    def max_memory_reserved(self, device):
        self._log("max_memory_reserved", device)
        return 1024 * MIB


@pytest.mark.parametrize("pynvml", [True, False])
def test_gpu_keys_with_a_fake_cuda(monkeypatch, caplog, pynvml):
    torch = pytest.importorskip("torch")

    def utilization(device):
        if not pynvml:
            raise ModuleNotFoundError("nvidia-ml-py does not seem to be installed")
        return 40

    cuda = FakeCuda(utilization)
    fake = type(sys)("torch")
    fake.device, fake.cuda = torch.device, cuda
    monkeypatch.setitem(sys.modules, "torch", fake)
    with SystemSampler(interval_s=0.02, device="cuda") as sampler:
        time.sleep(0.2)
        s = sampler.summary()
        time.sleep(0.1)
        s2 = sampler.summary()
    assert s["gpu_memory_mib"] == 512 and s["gpu_memory_reserved_mib_max"] == 1024
    assert {"cpu_percent", "rss_mib"} <= s.keys() and "gpu_memory_mib" in s2
    if pynvml:
        assert s["gpu_utilization_percent"] == 40
    else:
        assert "gpu_utilization_percent" not in s and "gpu_utilization_percent" not in s2
        assert [c[0] for c in cuda.calls].count("utilization") == 1  # not retried
        # said once, with what to install
        said = [r.getMessage() for r in caplog.records if "nvidia-ml-py" in r.getMessage()]
        assert len(said) == 1 and "pip install 'fetalgan[gpu]'" in said[0], said
    queried = {"utilization", "memory_allocated", "max_memory_reserved"}
    # "cuda" resolves to the caller's current device, once, in the caller's thread
    assert {c[1] for c in cuda.calls if c[0] in queried} == {3}
    from_sampler = {c[0] for c in cuda.calls if c[2] == "fetalgan-sysmetrics"}
    assert from_sampler and from_sampler <= queried
