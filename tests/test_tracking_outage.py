"""Every command that reads the tracking store fails fast, naming the store, when its server
does not answer (MLflow's own client would retry for minutes without a word)."""

from __future__ import annotations

import socket

import pytest

from fetalgan.cli import main


@pytest.fixture
def silent_server():
    """A port that accepts connections and never answers: a server that hangs or is stopped
    (SIGSTOP), the case a refused connection does not cover."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(
    "argv",
    [
        ["best", "demo"],
        ["generate", "--best", "demo", "-n", "2", "--out", "{tmp}/synth"],
        ["generate", "--run", "0123abcd", "-n", "2", "--out", "{tmp}/synth"],
        ["report", "demo", "--out", "{tmp}/report"],
        ["study", "analyse", "{tmp}/study.db", "--metrics-from", "demo"],
    ],
    ids=["best", "generate-best", "generate-run", "report", "study-analyse"],
)
def test_reads_of_a_server_that_is_down_fail_naming_it(argv, tmp_path, capsys):
    uri = _closed_port()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main([*argv, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert f"MLflow tracking server {uri} is not reachable" in err, err
    assert not (tmp_path / "synth").exists() and not (tmp_path / "report").exists()


def test_a_server_that_hangs_is_named_too(silent_server, capsys):
    assert main(["best", "demo", "--tracking-uri", silent_server]) == 2
    assert f"MLflow tracking server {silent_server} is not reachable" in capsys.readouterr().err
