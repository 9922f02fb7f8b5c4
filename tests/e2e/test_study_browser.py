"""The reader study and the sweep report in headless Chromium (Debian's chromium and
chromedriver, driven by selenium).

Study: the real commands (``fetalgan study create``, ``serve`` as a subprocess on a free
127.0.0.1 port, waited for through ``GET /healthz``, ``analyse --json``). One rater answers
every image; a second answers some; the server is killed and started again; the second rater's
browser carries on where it was, and again from a fresh browser by name, to the end; nothing is
lost, and ``analyse`` gives what a computation straight on the SQLite answers gives.

Report: ``fetalgan report`` on a phantom sweep written through ``fetalgan.tracking``, opened
from disk with the network cut off: every figure is drawn, nothing is fetched.

Screenshots go to ``tests/e2e/artifacts`` (or ``$CI_ARTIFACTS``): study.png, report.png.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest
from harness.jobs import REPO, VENV, artifacts_dir, need
from harness.procs import Daemon, wait_for

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
N_IMAGES = 6


def _load_test_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def browser_factory():
    """Makes headless Chromium sessions (each with its own profile); quits them all at the end."""
    need(CHROMIUM.exists() and CHROMEDRIVER.exists(),
         "chromium/chromedriver missing: apt-get install -y --no-install-recommends chromium "
         "chromium-driver")  # fmt: skip
    need(importlib.util.find_spec("selenium") is not None, "selenium missing: make install")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers, profiles = [], []

    def make(width: int = 900, height: int = 1000):
        profile = tempfile.mkdtemp(prefix="fg-chromium-")
        profiles.append(profile)
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", f"--user-data-dir={profile}",
                     f"--window-size={width},{height}"):  # fmt: skip
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        driver.set_page_load_timeout(60)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.quit()
    for profile in profiles:
        shutil.rmtree(profile, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
            return response.read() == b"OK"
    except OSError:
        return False


def _serve(study: Path, port: int, log: Path) -> Daemon:
    fetalgan = VENV / "bin" / "fetalgan"
    daemon = Daemon("study server", [str(fetalgan), "study", "serve", str(study), "--port",
                                     str(port)], log)  # fmt: skip
    wait_for(lambda: _healthy(f"http://127.0.0.1:{port}"), 60, "the study server",
             daemons=[daemon])  # fmt: skip
    return daemon


def _answers(study: Path) -> list[tuple]:
    with sqlite3.connect(study) as conn:
        return conn.execute(
            "SELECT a.rater, a.image_id, a.label, a.quality, i.is_real, i.position "
            "FROM answers a JOIN images i ON i.id = a.image_id ORDER BY a.rater, i.position"
        ).fetchall()


def _submit(driver, button_id: str) -> None:
    """Click a submit button and wait until the browser has left the page."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, button_id).click()

    def left_the_page(_driver) -> bool:
        # Mid-navigation chromedriver may answer "Node with given id does not belong to the
        # document" (a plain WebDriverException) instead of a stale-element error: both mean
        # the old document is gone.
        try:
            old.is_enabled()
        except WebDriverException:  # StaleElementReferenceException is one of these
            return True
        return False

    WebDriverWait(driver, 30).until(left_the_page)


def _progress(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "progress").text


def _answer_current(driver, label: str, quality: int) -> str:
    """Check the image is drawn, pick the answer, submit; returns the answered image id."""
    from selenium.webdriver.common.by import By

    image = driver.find_element(By.ID, "study-image")
    assert (
        driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image)
        == 64
    ), "the study image did not load at 64 px"
    image_id = driver.find_element(By.NAME, "image_id").get_attribute("value")
    driver.find_element(By.ID, f"label-{label}").click()
    driver.find_element(By.ID, f"quality-{quality}").click()
    _submit(driver, "submit")
    return image_id


def _sign_in(driver, url: str, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    driver.find_element(By.ID, "name").send_keys(name)
    _submit(driver, "start")


def _plan(k: int) -> tuple[str, int]:
    """The answer a test rater gives to the k-th image it sees."""
    return ("real", "fake", "fake")[k % 3], 1 + (2 * k) % 5


def test_rate_restart_resume_and_analyse(tmp_path, browser_factory):
    from selenium.webdriver.common.by import By

    study_helpers = _load_test_module(REPO / "tests" / "study" / "study_helpers.py", "sh_e2e")
    real_dir, fake_dir = study_helpers.write_image_dirs(tmp_path / "images", size=64)
    study = tmp_path / "study.db"
    fetalgan = str(VENV / "bin" / "fetalgan")
    subprocess.run([fetalgan, "study", "create", "--real", str(real_dir), "--fake",
                    str(fake_dir), "-n", str(N_IMAGES), "--seed", "4", "--out", str(study)],
                   check=True)  # fmt: skip
    with sqlite3.connect(study) as conn:
        sources = [row[0] for row in conn.execute("SELECT source FROM images")]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _serve(study, port, tmp_path / "serve1.log")
    try:
        # --- Ada answers every image --------------------------------------------------------
        ada = browser_factory()
        _sign_in(ada, url, "Ada <clinician>")
        assert ada.find_element(By.ID, "rater-name").text == "Ada <clinician>"  # shown as text
        for k in range(N_IMAGES):
            assert _progress(ada) == f"Image {k + 1} of {N_IMAGES}"
            page = ada.page_source
            assert not any(s.split(":", 1)[1] in page for s in sources)  # no file names/key
            if k == 1:
                shot = artifacts_dir() / "study.png"
                ada.save_screenshot(str(shot))
            _answer_current(ada, *_plan(k))
        assert "You have answered all" in ada.find_element(By.ID, "done").find_element(
            By.XPATH, "..").text  # fmt: skip

        # --- Bob answers three; an incomplete form is refused -------------------------------
        bob = browser_factory()
        _sign_in(bob, url, "Bob")
        bob.find_element(By.ID, "label-fake").click()
        bob.find_element(By.ID, "submit").click()  # no quality: the browser keeps the form
        assert _progress(bob) == f"Image 1 of {N_IMAGES}"
        # the same form with the browser's check removed: the server says 400 and why
        bob.execute_script("document.querySelectorAll('input').forEach(i => i.required = false)")
        _submit(bob, "submit")
        assert "Error 400" in bob.find_element(By.TAG_NAME, "h2").text
        assert "quality: missing" in bob.find_element(By.ID, "error-message").text
        assert [a for a in _answers(study) if a[0] == "Bob"] == []
        bob.get(url + "/rate")
        bob_ids = [_answer_current(bob, *_plan(k)) for k in range(3)]
        assert _progress(bob) == f"Image 4 of {N_IMAGES}"
        before = _answers(study)
    finally:
        server.stop()

    # --- restart: answers are on disk, sessions survive, Bob resumes ---------------------------
    assert not _healthy(url)
    server = _serve(study, port, tmp_path / "serve2.log")
    try:
        assert _answers(study) == before
        bob.get(url + "/rate")  # same browser, same cookie: carries on
        assert _progress(bob) == f"Image 4 of {N_IMAGES}"
        bob_ids.append(_answer_current(bob, *_plan(3)))
        bob.delete_all_cookies()  # another day, another machine: resume by name
        bob.get(url + "/rate")
        assert bob.current_url.rstrip("/") == url
        _sign_in(bob, url, "Bob")
        assert _progress(bob) == f"Image 5 of {N_IMAGES}"
        bob_ids += [_answer_current(bob, *_plan(k)) for k in range(4, N_IMAGES)]
        assert bob.find_element(By.ID, "done")
    finally:
        server.stop()

    rows = _answers(study)
    assert len(rows) == 2 * N_IMAGES and set(rows) >= set(before)
    assert [r[1] for r in rows if r[0] == "Bob"] == bob_ids  # in shown order, none twice
    for rater in ("Ada <clinician>", "Bob"):
        mine = [r for r in rows if r[0] == rater]
        assert [(r[2], r[3]) for r in mine] == [_plan(k) for k in range(N_IMAGES)]

    # --- analyse against a computation straight on the stored answers --------------------------
    out = tmp_path / "analysis.json"
    subprocess.run([fetalgan, "study", "analyse", str(study), "--json", str(out), "--out",
                    str(tmp_path / "plots")], check=True)  # fmt: skip
    result = json.loads(out.read_text())
    for rater in ("Ada <clinician>", "Bob"):
        mine = [r for r in rows if r[0] == rater]
        fakes = [r for r in mine if not r[4]]
        reals = [r for r in mine if r[4]]
        expected = {
            "n_answered": len(mine),
            "accuracy": sum((r[2] == "real") == bool(r[4]) for r in mine) / len(mine),
            "fakes_called_real": sum(r[2] == "real" for r in fakes) / len(fakes),
            "mean_quality_real": sum(r[3] for r in reals) / len(reals),
            "mean_quality_fake": sum(r[3] for r in fakes) / len(fakes),
        }
        for key, value in expected.items():
            assert result["raters"][rater][key] == pytest.approx(value), (rater, key)
    fakes = [r for r in rows if not r[4]]
    assert result["all_raters"]["fakes_called_real"] == pytest.approx(
        sum(r[2] == "real" for r in fakes) / len(fakes)
    )
    (pair,) = result["agreement"]
    assert pair["n_common"] == N_IMAGES and pair["percent_agreement"] == 1.0
    assert (tmp_path / "plots" / "regression.png").is_file()


def test_report_renders_offline(tmp_path, browser_factory):
    from selenium.webdriver.common.by import By

    report_tests = _load_test_module(REPO / "tests" / "test_report.py", "report_e2e")
    sweep = report_tests.log_phantom_sweep(tmp_path, "phantom_grid")
    out = tmp_path / "report"
    subprocess.run([str(VENV / "bin" / "fetalgan"), "report", "phantom_grid", "--out", str(out),
                    "--tracking-uri", sweep["tracking_uri"]], check=True)  # fmt: skip
    driver = browser_factory(1280, 1000)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
    )
    driver.get((out / "report.html").as_uri())
    assert driver.title == "fetalgan report · phantom_grid"
    images = driver.find_elements(By.TAG_NAME, "img")
    assert {i.get_attribute("id") for i in images} == {
        "curves", "hyperparams", "best-samples", "real-samples"}  # fmt: skip
    for image in images:
        width = driver.execute_script(
            "return arguments[0].complete ? arguments[0].naturalWidth : 0", image
        )
        assert width > 0, f"{image.get_attribute('id')} not drawn"
    fetched = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert fetched == []
    rows = driver.find_elements(By.CSS_SELECTOR, "#trials-table tr")
    assert len(rows) == 1 + len(sweep["trials"])
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1280, min(height + 40, 4000))
    driver.save_screenshot(str(artifacts_dir() / "report.png"))
