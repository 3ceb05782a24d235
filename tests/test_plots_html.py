"""``python -m pipeline plots diff`` opens in a browser: headless Chromium draws every plot, offline.

DVC's default page loads vega, vega-lite and vega-embed from a CDN; the command's page inlines them.
Chromium runs behind a proxy that does not exist, so a page that reached for the network would show
nothing. Locally the test skips without Chromium (Debian ``chromium`` + ``chromium-driver``) or
selenium; in CI (``CI`` set) their absence is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import dvc, run, set_params
from pipeline.core.dataset import CLASS_NAMES

pytestmark = pytest.mark.integration

# What the browser drew: data marks (or a sized canvas) per vega plot, and each image's load state.
PROBE = """
const plots = {};
for (const div of document.querySelectorAll('.vega-embed')) {
  const marks = [...div.querySelectorAll('svg.marks .role-mark path, svg.marks .role-mark line')]
    .filter(e => e.tagName !== 'path' || (e.getAttribute('d') || '').length > 0).length;
  const canvases = [...div.querySelectorAll('canvas')].filter(c => c.width > 0 && c.height > 0).length;
  plots[div.id] = marks + canvases;
}
const images = [...document.images].map(i => [i.getAttribute('src'), i.complete ? i.naturalWidth : 0]);
const axes = {};  // per plot: each axis's description and its tick labels, in drawn order
for (const div of document.querySelectorAll('.vega-embed')) {
  axes[div.id] = [...div.querySelectorAll('g.role-axis')].map(axis => [
    axis.getAttribute('aria-label') || '',
    [...axis.querySelectorAll('.role-axis-label text')].map(text => text.textContent),
  ]);
}
return {plots, images, axes};
"""


def require(available: bool, what: str) -> None:
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"{what} is not installed")


def expected_plots(dvc_yaml: Path) -> tuple[set[str], set[str]]:
    """Element ids of the titled vega plots and paths of the images in ``dvc.yaml``'s top-level plots."""
    from dvc_render.base import Renderer

    vega, images = set(), set()
    for entry in yaml.safe_load(dvc_yaml.read_text())["plots"]:
        if isinstance(entry, str):  # an image, or a folder of them (DVCLive's plots/images)
            folder = dvc_yaml.parent / entry
            found = sorted(folder.glob("*.png")) if folder.is_dir() else []
            images |= {path.relative_to(dvc_yaml.parent).as_posix() for path in found} or {entry}
        else:
            (title,) = entry
            vega.add(Renderer.remove_special_chars(title))
    return vega, images


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    require(bool(chromium and chromedriver), "Chromium and chromedriver (Debian chromium, chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require(False, "selenium")
        raise

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,2400",
        "--proxy-server=http://127.0.0.1:9",  # nothing listens: any network request fails
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_plots_page_draws_every_plot_in_chromium(project: Path, browser: Any, tmp_path: Path) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    dvc("repro", cwd=project)
    run("git", "add", "-A", cwd=project)
    run("git", "commit", "-q", "-m", "a run", cwd=project)
    set_params(project, {"train.epochs": 2, "train.model.dense.hidden_units": [8]})
    dvc("repro", cwd=project)
    command = run(sys.executable, "-m", "pipeline", "plots", "diff", "HEAD", cwd=project)
    page = project / "dvc_plots" / "index.html"
    assert page.as_uri() in command.stdout  # DVC says where the page is
    html = page.read_text()
    assert "cdn.jsdelivr.net" not in html, "the page would need the network"
    vega_ids, image_paths = expected_plots(project / "dvc.yaml")
    assert vega_ids and image_paths

    browser.get(page.as_uri())

    def drawn(driver: Any) -> dict | bool:
        state = driver.execute_script(PROBE)
        done = all(state["plots"].get(plot_id) for plot_id in vega_ids) and all(
            width for _, width in state["images"]
        )
        return state if done else False

    try:
        state = WebDriverWait(browser, 60, poll_frequency=0.25).until(drawn)
    except TimeoutException:
        browser.save_screenshot(str(tmp_path / "plots.png"))
        state = browser.execute_script(PROBE)
        logs = browser.get_log("browser")
        pytest.fail(f"plots not drawn in 60 s: {json.dumps(state)}\nconsole: {logs}\nscreenshot: {tmp_path}")
    browser.save_screenshot(str(tmp_path / "plots.png"))

    assert set(state["plots"]) == vega_ids, "one vega plot per titled plot in dvc.yaml, none extra"
    sources = [source for source, _ in state["images"]]
    assert len(sources) == len(set(sources)), f"an image is shown twice: {sources}"
    for path in image_paths:
        assert any(source.endswith(path.replace("/", "_")) for source in sources), path
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors

    # Both revisions; DVC's own templates: steps (epochs from 1, as in the PNGs) on the x axes, every
    # class on the confusion matrix's (in DVC's alphabetical order, where the PNG keeps label order).
    assert "HEAD" in html and "workspace" in html
    for plot in ("Loss_per_epoch", "Accuracy_per_epoch"):
        (ticks,) = [labels for description, labels in state["axes"][plot] if description.startswith("X-axis")]
        assert ticks and min(float(tick) for tick in ticks) >= 1, ticks
    matrix = dict(state["axes"]["Confusion_matrix__test_set_"])
    (actual,) = [labels for description, labels in matrix.items() if description.startswith("Y-axis")]
    assert sorted(actual) == sorted(CLASS_NAMES)
    assert not (project / "plots.html").exists()  # nothing left in the project but dvc_plots/ (ignored)
