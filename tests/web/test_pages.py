"""The pages as files (routes, types, caching), and as people use them: keyboard only, a phone, 200 % zoom."""
from __future__ import annotations

import re

from urllib.parse import parse_qs, urlsplit

from support.speech import SPEECH
from gateway.auth import hash_key
from tests.gateway.servers import get, serving
from tests.web.conftest import fake_mic
from tests.web.test_live import TIMEOUT_MS

OVERFLOW = "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"


def test_pages_and_assets_are_served(server) -> None:
    for path in ("/", "/overlay", "/watch"):
        status, body = get(server.http + path)
        assert status == 200 and body.startswith(b"<!doctype html>"), path
    for name in ("live.js", "overlay.js", "watch.js", "captions.js", "ingest.js", "subscribe.js", "access.js",
                 "pcm.js", "capture-worklet.js", "style.css", "overlay.css", "favicon.svg"):
        status, _ = get(f"{server.http}/static/{name}")
        assert status == 200, name
    import urllib.request

    with urllib.request.urlopen(server.http + "/static/live.js") as r:  # module scripts need a JavaScript type
        assert "javascript" in r.headers["content-type"] and r.headers["cache-control"] == "no-cache"
    with urllib.request.urlopen(server.http + "/favicon.ico") as r:  # what browsers ask for first
        assert r.headers["content-type"] == "image/svg+xml" and r.read().startswith(b"<svg")
    assert get(server.http + "/static/nothing.js")[0] == 404
    assert get(server.http + "/static/../gateway/app.py")[0] == 404


def test_keyboard_only(server, launch) -> None:
    page = launch(*fake_mic(SPEECH / "one-two-three.wav")).new_page()
    page.goto(server.http + "/")
    for _ in range(10):  # Tab from the top of the page reaches Start first among the controls
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.dataset.testid") == "start":
            break
    else:
        raise AssertionError("Start is not reachable with Tab")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.activeElement.dataset.testid === 'stop'", timeout=TIMEOUT_MS)
    page.wait_for_selector("[data-testid=final]", timeout=TIMEOUT_MS)
    page.keyboard.press("Enter")  # focus moved to Stop
    page.wait_for_function("() => document.querySelector('[data-testid=status]').dataset.state === 'closed'",
                           timeout=TIMEOUT_MS)
    assert page.evaluate("() => document.activeElement.dataset.testid") == "start"
    captions = page.locator("[data-testid=captions]")
    assert captions.get_attribute("role") == "log" and captions.get_attribute("aria-live") == "polite"
    assert re.sub(r"\W", "", captions.inner_text().lower()) in ("123", "onetwothree")  # digits or words: both right


def test_viewer_says_what_is_true(server, launch) -> None:
    """/watch without a stream lists streams and says to choose one (not "Live"); with one, its follow checkbox
    sits on one line with its label."""
    page = launch().new_page()
    page.goto(server.http + "/watch")
    page.wait_for_function("() => document.querySelector('[data-testid=status]').dataset.state === 'idle'",
                           timeout=TIMEOUT_MS)
    assert page.locator("[data-testid=status]").inner_text().strip() == "Choose a stream"
    assert not page.locator("#follow").is_visible()
    page.goto(server.http + "/watch?stream=demo")
    box, label = page.locator("#follow").bounding_box(), page.locator("#follow-label").bounding_box()
    assert box is not None and label is not None and label["height"] < 2 * box["height"] + 8  # one line


def test_phone_and_200_percent_zoom(server, launch, shots) -> None:
    browser = launch()
    # A phone, and a 1280x800 window at 200 % zoom (the same CSS viewport as 640x400 at device scale 2).
    for name, viewport, scale in (("phone", {"width": 390, "height": 844}, 3), ("zoom-200", {"width": 640, "height": 400}, 2)):
        context = browser.new_context(viewport=viewport, device_scale_factor=scale, is_mobile=name == "phone",
                                      has_touch=name == "phone")
        page = context.new_page()
        for path in ("/", "/watch?stream=demo"):
            page.goto(server.http + path)
            assert page.evaluate(OVERFLOW), f"{path} scrolls sideways on {name}"
        page.goto(server.http + "/")
        for testid in ("start", "stop", "language", "copy", "download", "overlay-url"):
            box = page.locator(f"[data-testid={testid}]").bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"], testid
            assert box["height"] >= 24, testid  # a finger (or a zoomed cursor) can hit it
        shots(page, f"live-page-{name}", full_page=True)
        page.goto(server.http + "/overlay?stream=demo")
        assert page.evaluate("() => document.documentElement.scrollHeight <= innerHeight") and page.evaluate(OVERFLOW)
        context.close()


def test_api_key_mints_tokens_for_the_socket_and_the_overlay(launch, tmp_path) -> None:
    key = "web-test-key"
    with serving(tmp_path / "serve.log", "--api-key", hash_key(key)) as server:
        browser = launch(*fake_mic(SPEECH / "one-two-three.wav"))
        page = browser.new_page()
        page.goto(server.http + "/")
        page.fill("[data-testid=api-key]", "not-the-key")
        page.click("[data-testid=start]")  # the page cannot mint a listen token: it says why and stops
        page.wait_for_function("() => document.querySelector('[data-testid=status]').dataset.state === 'failed'",
                               timeout=TIMEOUT_MS)
        assert "invalid API key" in page.locator("[data-testid=status]").inner_text()

        page.fill("[data-testid=api-key]", key)
        page.locator("[data-testid=api-key]").dispatch_event("change")
        page.wait_for_function("() => document.querySelector('[data-testid=overlay-url]').value.includes('token=')",
                               timeout=TIMEOUT_MS)
        overlay_url = page.locator("[data-testid=overlay-url]").input_value()
        page.click("[data-testid=start]")
        page.wait_for_selector("[data-testid=final]", timeout=TIMEOUT_MS)
        page.click("[data-testid=stop]")

        overlay = browser.new_page()
        overlay.goto(overlay_url)  # a read-only token: it may watch, not send audio
        overlay.wait_for_selector("[data-testid=overlay-line]", timeout=TIMEOUT_MS)
        token = parse_qs(urlsplit(overlay_url).query)["token"][0]
        stream = parse_qs(urlsplit(overlay_url).query)["stream"][0]
        assert get(f"{server.http}/v1/streams/{stream}/captions.vtt?token={token}")[0] == 200
        status, body = get(f"{server.http}/v1/streams/other/captions.vtt?token={token}")
        assert status == 403, body  # bound to this page's stream
        anonymous = browser.new_page()
        anonymous.goto(overlay_url.split("&token=")[0])
        anonymous.wait_for_function("() => document.body.dataset.state === 'reconnecting'", timeout=TIMEOUT_MS)
        assert anonymous.locator("[data-testid=overlay-line]").count() == 0
