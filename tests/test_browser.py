"""The notebooks' widgets in a real browser: JupyterLab headless, Debian's Chromium driven by Playwright (no browser download).

Runs with `make test-browser` (and from `make test` when /usr/bin/chromium exists). The screenshots go to pytest's tmp_path,
or to the folder $EQUIV_TOOLS_SCREENSHOT_DIR names: `make screenshots` refreshes docs/browser_explorer.png, docs/browser_map_viewer.png
and docs/browser_patching.png.
"""
import os
import re
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
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab on a free loopback port, serving a copy of notebooks/ (autosave never touches the committed ones).

    Its kernels import equiv_tools from this checkout (PYTHONPATH), not from wherever the environment installed it.
    """
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    (tmp_path / "data").symlink_to(REPO / "data")
    port = free_port()
    args = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
            "--IdentityProvider.token=", "--ServerApp.password=", f"--notebook-dir={tmp_path / 'notebooks'}",
            f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"]  # a fresh layout: no notebooks restored from earlier runs
    if os.geteuid() == 0:
        args.append("--allow-root")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/api/status")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _set_text(page, description: str, value: str) -> None:
    """Type into the text box labelled exactly ``description`` and press Enter (the widgets update on Enter)."""
    label = page.locator("label", has_text=re.compile(rf"^\s*{re.escape(description)}\s*$"))
    box = page.locator(".widget-text").filter(has=label).locator("input").first
    box.fill(value)
    box.press("Enter")


def _run_all(page, lab: str, notebook: str) -> None:
    page.goto(f"{lab}/lab/tree/{notebook}?reset")
    page.wait_for_selector(".jp-Notebook", timeout=120_000)
    expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=120_000)  # kernel connected
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def _screenshot(page, widget: str, path: Path) -> None:
    """Save the last widget box that holds the element ``widget`` (a CSS selector)."""
    box = page.locator(".widget-vbox").filter(has=page.locator(widget)).last
    box.scroll_into_view_if_needed()
    box.screenshot(path=str(path))


@pytest.fixture()
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1100})
        finally:
            browser.close()


def _screenshot_dir(tmp_path) -> Path:
    return Path(os.environ.get(SCREENSHOT_ENV) or tmp_path)


def test_quickstart_explorer_in_chromium(lab, page, tmp_path):
    screenshot = _screenshot_dir(tmp_path) / "browser_explorer.png"
    _run_all(page, lab, "01_quickstart.ipynb")
    representative = page.locator(".et-representative")
    expect(representative).to_contain_text("answers as 349 + 705", timeout=240_000)
    _set_text(page, "a", "1350")  # change it, and back: the round trip goes through the kernel
    expect(representative).to_contain_text("answers as 350 + 705", timeout=60_000)
    _set_text(page, "a", "1349")
    _set_text(page, "b", "2705")
    expect(representative).to_contain_text("answers as 349 + 705", timeout=60_000)
    expect(page.locator(".et-answer")).to_have_text("1054")
    expect(page.locator(".et-prob")).to_have_count(6)  # a probability under each of the six answer digits
    _screenshot(page, ".et-answer", screenshot)
    assert screenshot.stat().st_size > 10_000


def test_map_viewer_in_chromium(lab, page, tmp_path):
    screenshot = _screenshot_dir(tmp_path) / "browser_map_viewer.png"
    _run_all(page, lab, "03_equivalence_maps.ipynb")
    readout = page.locator(".et-map-readout")
    expect(readout).to_contain_text("(10,000 pairs)", timeout=300_000)  # the notebook's window: 1000..1099 x 2000..2099
    for description, value in (("a from", "990"), ("a to", "1009"), ("b from", "990"), ("b to", "1009")):
        _set_text(page, description, value)  # a window straddling 1000
    expect(readout).to_contain_text("(400 pairs)", timeout=120_000)
    shares = {k: float(v) for k, v in re.findall(r"(correct|matches relation|other): ([\d.]+)%", readout.inner_text())}
    assert len(shares) == 3 and sum(v > 0 for v in shares.values()) > 1, shares
    _set_text(page, "pair a", "1349")
    _set_text(page, "pair b", "2705")
    pair = page.locator(".et-pair-readout")
    expect(pair).to_contain_text("the model answers 1054", timeout=60_000)
    expect(pair).to_contain_text("matches relation")
    _screenshot(page, ".et-map-readout", screenshot)
    assert screenshot.stat().st_size > 10_000


def test_representation_explorer_slider_in_chromium(lab, page, tmp_path):
    _run_all(page, lab, "05_reading_the_model.ipynb")
    readout = page.locator(".et-pca-readout")
    expect(readout).to_contain_text("step 2000: silhouette", timeout=300_000)
    box = page.locator(".widget-vbox").filter(has=readout).last
    handle = box.locator(".widget-slider .noUi-handle").first
    handle.scroll_into_view_if_needed()
    handle.focus()
    handle.press("ArrowLeft")  # one step back along the checkpoint series: 2000 -> 1500, through the kernel
    expect(readout).to_contain_text("step 1500: silhouette", timeout=120_000)


def test_patching_explorer_in_chromium(lab, page, tmp_path):
    screenshot = _screenshot_dir(tmp_path) / "browser_patching.png"
    _run_all(page, lab, "04_patching.ipynb")
    readout = page.locator(".et-patch-readout")
    expect(readout).to_contain_text("normalised_logit_diff at ans[10^2]; largest: 1.02 at layer 2, ans[10^1]", timeout=300_000)
    image = page.locator(".widget-vbox").filter(has=readout).last.locator("img")
    before = image.get_attribute("src")
    _screenshot(page, ".et-patch-readout", screenshot)
    assert screenshot.stat().st_size > 10_000
    _set_text(page, "corrupted a", "359")  # the tens digit apart: the first answer digit that differs is ans[10^1]
    expect(readout).to_contain_text("(model: 1064)", timeout=120_000)
    expect(readout).to_contain_text("normalised_logit_diff at ans[10^1]")
    expect(image).not_to_have_attribute("src", before)  # a new heatmap
    answer_at = page.locator(".widget-dropdown").filter(has=page.locator("label", has_text="answer at")).locator("select")
    answer_at.select_option(label="ans[10^0]")  # the two answers agree there: a message, and the raw logit difference
    message = page.locator(".et-patch-message")
    expect(message).to_contain_text("normalised logit difference is undefined", timeout=120_000)
    expect(readout).to_contain_text("logit_diff at ans[10^0]")
