"""A real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

Playwright's sync API runs in a worker thread (`trio.to_thread`), so the server under
test keeps running in the test's own trio loop. `watch` opens a page and samples its
`<video>` element: size, playback position and `getVideoPlaybackQuality()`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
import trio

CHROMIUM = Path("/usr/bin/chromium")
T = TypeVar("T")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--autoplay-policy=no-user-gesture-required"]
SAMPLE = """() => {
    const v = document.querySelector('video');
    const q = v.getVideoPlaybackQuality();
    return [performance.now() / 1000, v.videoWidth, v.videoHeight, v.currentTime,
            q.totalVideoFrames, q.droppedVideoFrames];
}"""


def require_chromium() -> None:
    """Skip where no browser is installed, except in CI: there it is an error."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI needs /usr/bin/chromium (apt-get install chromium): ./scripts/test installs it as root")
        pytest.skip("no /usr/bin/chromium: apt-get install chromium")


@attrs.frozen
class Sample:
    wall: float  # time.monotonic() when taken (the test's clock too)
    at: float  # page clock, seconds
    width: int
    height: int
    position: float  # video.currentTime
    presented: int  # totalVideoFrames
    dropped: int  # droppedVideoFrames


@attrs.frozen
class Watched:
    samples: list[Sample]
    console: list[str]
    messages: list[dict[str, object]]  # the page's `window.messages`, if it keeps them

    def since(self, wall: float) -> list[Sample]:
        """The samples taken from `wall` (time.monotonic()) on."""
        return [s for s in self.samples if s.wall >= wall]

    def steady(self, after: float, span: float) -> tuple[Sample, Sample]:
        """A `clean_window` of `span` seconds from `after` seconds into the watch on, else
        that whole stretch."""
        start = self.samples[0].at + after
        steady = [s for s in self.samples if s.at >= start]
        return clean_window(steady, span) or (steady[0], steady[-1])


def few_dropped(dropped: int, presented: int) -> bool:
    """Within the budget of a whole stream on a loaded machine when no window was clean
    (`clean_window`): one frame in ten at most. Four suite workers on two cores can run
    four Chromiums at once, whose compositors then show some frames late (19 in 231 was
    seen with the stream whole: rate 1.00); a broken stream stalls (the rate check) or
    drops far more: every frame after a torn or lost one until the next keyframe, a
    second's worth (25 of the 75 in a 3 s window)."""
    return dropped <= max(1, presented // 10)


def clean_window(samples: Sequence[Sample], span: float) -> tuple[Sample, Sample] | None:
    """The first two samples at least `span` seconds apart (page clock) with no frame dropped
    between them, if any.

    Chromium counts a frame as dropped when the compositor would show it late: on a loaded
    2-core machine a burst of those is noise (CI once saw 2 in 78 frames while the stream was
    whole). A whole stream plays some window clean; a broken one (a timestamp jump, a torn or
    lost frame) stalls or drops in every window.
    """
    for i, first in enumerate(samples):
        for last in samples[i + 1:]:
            if last.dropped != first.dropped:
                break
            if last.at - first.at >= span:
                return first, last
    return None


def _watch(url: str, seconds: float, screenshot: Path, playing: trio.Event | None) -> Watched:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 500})
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            page.goto(url)
            samples: list[Sample] = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                samples.append(Sample(time.monotonic(), *page.evaluate(SAMPLE)))
                if playing is not None and not playing.is_set() and samples[-1].presented > 0:
                    trio.from_thread.run_sync(playing.set)
                time.sleep(0.25)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
            return Watched(samples, console, page.evaluate("() => window.messages || []"))
        finally:
            browser.close()


def sample(page: Any) -> Sample:
    """The first `<video>` of the page, now."""
    return Sample(time.monotonic(), *page.evaluate(SAMPLE))


def _drive(url: str, script: Callable[[Any], T], screenshot: Path, bfcache: bool, self_signed: bool,
           init_script: str | None) -> T:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Playwright turns Chromium's back/forward cache off unless told otherwise
        ignored = ["--disable-back-forward-cache"] if bfcache else None
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, ignore_default_args=ignored)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800}, ignore_https_errors=self_signed)
            if init_script is not None:
                page.add_init_script(init_script)
            page.goto(url)
            try:
                return script(page)
            finally:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot))
        finally:
            browser.close()


async def drive(url: str, script: Callable[[Any], T], screenshot: Path, *, bfcache: bool = False,
                self_signed: bool = False, init_script: str | None = None) -> T:
    """Open `url` and run `script(page)` (Playwright's sync Page) in the browser's thread;
    it may call back into the test's trio loop with `trio.from_thread.run(_sync)`.
    `bfcache`: leave Chromium's back/forward cache on, as in a user's browser.
    `self_signed`: accept the test's own certificate (HTTPS and WSS).
    `init_script`: JavaScript run in the page before its own scripts."""
    require_chromium()
    return await trio.to_thread.run_sync(partial(_drive, url, script, screenshot, bfcache, self_signed,
                                                 init_script))


async def watch(url: str, seconds: float, screenshot: Path, playing: trio.Event | None = None) -> Watched:
    """Open `url` in headless Chromium, sample its video for `seconds` (counted from the
    page's start), save a screenshot; `playing` is set once a frame has been presented."""
    require_chromium()
    return await trio.to_thread.run_sync(partial(_watch, url, seconds, screenshot, playing))
