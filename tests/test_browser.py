"""The quickstart in a real browser: JupyterLab headless, Debian's Chromium driven by Playwright (no browser download).

Runs with `make test-browser` (and from `make test` when /usr/bin/chromium exists). The explorer's screenshot goes to
pytest's tmp_path, or to the folder $EQUIV_TOOLS_SCREENSHOT_DIR names: `make screenshots` refreshes docs/browser_explorer.png.
"""
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO
from .test_lab import free_port, wait_for

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT_ENV = "EQUIV_TOOLS_SCREENSHOT_DIR"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab on a free loopback port, serving a copy of notebooks/ (autosave never touches the committed ones)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    (tmp_path / "data").symlink_to(REPO / "data")
    port = free_port()
    args = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
            "--IdentityProvider.token=", "--ServerApp.password=", f"--notebook-dir={tmp_path / 'notebooks'}"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/api/status")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _set_text(page, description: str, value: str) -> None:
    box = page.locator(".widget-text").filter(has=page.locator("label", has_text=description)).locator("input").first
    box.fill(value)
    box.press("Enter")


def test_quickstart_explorer_in_chromium(lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path) / "browser_explorer.png"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{lab}/lab/tree/01_quickstart.ipynb")
            page.wait_for_selector(".jp-Notebook", timeout=120_000)
            expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=120_000)  # kernel connected
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

            representative = page.locator(".et-representative")
            expect(representative).to_contain_text("answers as 349 + 705", timeout=240_000)
            _set_text(page, "a", "1350")  # change it, and back: the round trip goes through the kernel
            expect(representative).to_contain_text("answers as 350 + 705", timeout=60_000)
            _set_text(page, "a", "1349")
            _set_text(page, "b", "2705")
            expect(representative).to_contain_text("answers as 349 + 705", timeout=60_000)
            expect(page.locator(".et-answer")).to_have_text("1054")

            explorer = page.locator(".widget-vbox").filter(has=page.locator(".et-answer")).last
            explorer.scroll_into_view_if_needed()
            explorer.screenshot(path=str(screenshot))
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
