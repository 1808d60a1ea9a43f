"""The Prefect UI checked in a real browser: Debian's Chromium driven by Playwright (no browser
download), against a local Prefect server started by ``graywave server start``, after a real wave
with rejects. A screenshot of each page is kept in ``test-output/ui/``.

CI sets ``GRAYWAVE_REQUIRE_CHROMIUM=1`` (``.ci/run`` installs Chromium): there, a missing browser
fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers import EXPECTED_REJECTS, GRAYWAVE, SERVER_TIMEOUT_S, command_env, free_port, put_uploads

SCREENSHOTS = Path(__file__).parents[2] / "test-output" / "ui"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

if CHROMIUM is None and os.environ.get("GRAYWAVE_REQUIRE_CHROMIUM") != "1":
    pytest.skip("no chromium on this machine (apt-get install -y chromium)", allow_module_level=True)


def test_a_waves_page_shows_its_counts_and_its_rejects_reasons(settings, phone_files, tmp_path, prefect_home):
    assert CHROMIUM is not None, "GRAYWAVE_REQUIRE_CHROMIUM=1 and no chromium: apt-get install -y chromium"
    from playwright.sync_api import sync_playwright

    env = command_env(prefect_home)
    day = settings.today()
    put_uploads(settings.blob_url, day, phone_files)
    port = free_port()
    ui = f"http://127.0.0.1:{port}"
    started = subprocess.run([GRAYWAVE, "server", "start", "--port", str(port)], env=env, capture_output=True)
    assert started.returncode == 0, started
    try:
        wave = subprocess.run([GRAYWAVE, "wave", "run", "--name", "morning"], env=env, capture_output=True, text=True)
        assert wave.returncode == 0, wave.stdout + wave.stderr
        [run] = httpx.post(f"{ui}/api/flow_runs/filter", json={}, timeout=SERVER_TIMEOUT_S).json()
        assert run["name"] == f"wave-morning-{day}"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.set_default_timeout(SERVER_TIMEOUT_S * 1000)  # each navigation and wait: not Playwright's 30 s
            page.goto(f"{ui}/runs/flow-run/{run['id']}", wait_until="networkidle")
            page.get_by_text("Artifacts", exact=True).first.click()
            summary = page.get_by_text(f"7 processed, {len(EXPECTED_REJECTS)} rejected").first
            summary.wait_for()  # the summary artifact's card, on the run's page
            page.get_by_text("over_decode_budget 1").first.wait_for()  # reasons, counted
            page.screenshot(path=SCREENSHOTS / "wave-run-artifacts.png", full_page=True)

            page.get_by_text("wave-rejects", exact=True).first.click()  # the table, one row a reject
            page.wait_for_load_state("networkidle")
            page.get_by_text("no known image format in the file header").first.wait_for()
            page.screenshot(path=SCREENSHOTS / "wave-rejects.png", full_page=True)
            text = page.inner_text("body")
            browser.close()
        for reason in EXPECTED_REJECTS.values():
            assert reason in text
    finally:
        subprocess.run([GRAYWAVE, "server", "stop"], env=env, capture_output=True)
