"""Fixtures for the browser tests: one `livecaptions serve` for the package, Debian's Chromium driven by Playwright
with a fake microphone that plays a reference clip, and a folder for the screenshots.

Chromium is required, not optional: without /usr/bin/chromium (`.ci/run` installs it) these tests fail."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.gateway.servers import Server, serving

CHROMIUM = Path("/usr/bin/chromium")
# Set to a folder (e.g. docs/screenshots) to also write the screenshots there: that is how the README's are made.
SCREENSHOTS_ENV = "LIVECAPTIONS_SCREENSHOTS"
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]


def fake_mic(wav: Path, loop: bool = False) -> list[str]:
    """Flags that answer getUserMedia with `wav` (played once, then silence, unless `loop`) and no permission UI."""
    return ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}{'' if loop else '%noloop'}"]


@pytest.fixture(scope="session")
def playwright():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture
def launch(playwright) -> Iterator[Callable]:
    """launch(*flags) -> a Chromium browser (closed after the test)."""
    browsers = []

    def start(*flags: str):
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*BROWSER_FLAGS, *flags])
        browsers.append(browser)
        return browser

    yield start
    for b in browsers:
        b.close()


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("web-server") / "serve.log") as s:
        yield s


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Callable:
    """shots(page, name, **options): a PNG screenshot into the test artifacts (and $LIVECAPTIONS_SCREENSHOTS)."""
    folder = tmp_path_factory.mktemp("screenshots")
    extra = os.environ.get(SCREENSHOTS_ENV)

    def take(page, name: str, **options) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), **options)
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(extra) / f"{name}.png"), **options)
        assert path.stat().st_size > 1000
        return path

    return take
