"""Headless Chromium against the MLflow UI: the plain ``--dump-dom`` of a URL, and a Selenium
session that adds metric columns to the runs table (MLflow 3.17 hides them by default and keeps
the column choice in browser storage, not in the URL)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,900",
]


def dump_dom(url: str, timeout_s: float = 180) -> str:
    """The DOM of ``url`` after the React app had 20 s of virtual time to fetch and render."""
    profile = tempfile.mkdtemp(prefix="fg-chromium-")
    try:
        argv = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000"]
        result = subprocess.run(
            [*argv, "--dump-dom", url], capture_output=True, text=True, timeout=timeout_s
        )
        return result.stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def runs_table(
    url: str, *, wait_for_text: str, metrics: list[str], hide: list[str], screenshot: Path
) -> tuple[str, dict[str, list[str]]]:
    """Open an experiment's runs table, wait for ``wait_for_text`` (a run name), tick the
    ``metrics`` columns and untick the ``hide`` ones in the Columns menu, save a screenshot.
    Returns the page's DOM and each metric column's cell texts, top to bottom."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    profile = tempfile.mkdtemp(prefix="fg-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        wait = WebDriverWait(driver, 90)
        driver.get(url)
        wait.until(
            ec.presence_of_element_located((By.XPATH, f"//*[contains(text(), '{wait_for_text}')]"))
        )
        wait.until(
            ec.element_to_be_clickable((By.XPATH, "//button[normalize-space(.)='Columns']"))
        ).click()
        for name in [*metrics, *hide]:
            box = (
                f"//span[@title='{name}']/preceding-sibling::span[contains(@class,'tree-checkbox')]"
            )
            wait.until(ec.element_to_be_clickable((By.XPATH, box))).click()
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        cells = {}
        for name in metrics:
            header = f"//div[@role='columnheader'][.//*[normalize-space(text())='{name}']]"
            wait.until(ec.presence_of_element_located((By.XPATH, header)))
            column = f"//div[@role='gridcell' and @col-id='metrics.`{name}`']"
            wait.until(ec.presence_of_element_located((By.XPATH, column)))
            elements = driver.find_elements(By.XPATH, column)
            elements.sort(key=lambda e: e.location["y"])
            cells[name] = [e.text.strip() for e in elements]
        driver.save_screenshot(str(screenshot))
        return driver.page_source, cells
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
