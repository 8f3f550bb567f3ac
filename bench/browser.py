"""`python -m bench.browser`: players in headless Chromium, first frame and latency.

For `app/static/minimal.html` (mpegts.js on `/ws/stream.ts`, with its stock config, then
with `&lowlatency`: no stash buffer, latency chasing) and for the viewer page at `/` (one
tile: native MSE on `/ws/stream?format=fmp4`, and with `?player=mpegts` mpegts.js on
`/ws/stream`, low latency), against a 640x360 2 Mbit/s camera,
alternating rounds of:
- cold: no upstream running (LINGER=0), navigation to the first presented frame;
- joining: another viewer keeps the upstream up (in the page's format: with fMP4, its
  remuxer too), navigation to the first presented frame.
The first frame is the first `requestVideoFrameCallback` after navigation (its `now`,
which counts from navigation start). Live latency is the newest media the player has
(the end of `video.buffered`) minus what it shows (`currentTime`), sampled every 0.25 s
from 3 s to 6 s after navigation; it leaves out the camera and FFmpeg, which every
player pays alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial

import httpx
import trio

from bench.__main__ import camera_and_server
from tests.browser import ARGS, CHROMIUM
from tests.lean import LeanViewer

HOOK = """
window.__firstFrame = null;
const hook = () => {  // the viewer page makes its video once the stream list is in
  const video = document.querySelector('video');
  if (!video) { setTimeout(hook, 5); return; }
  video.requestVideoFrameCallback((now) => { window.__firstFrame = now / 1000; });
};
document.addEventListener('DOMContentLoaded', hook);
"""
LAG = """() => { const v = document.querySelector('video');
  return v.buffered.length ? v.buffered.end(v.buffered.length - 1) - v.currentTime : null; }"""


def _rounds(url: str, kinds: list[str], joining_started: object, joining_stopped: object) -> list[tuple[str, float, float]]:
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            for kind in kinds:
                if kind == "joining":
                    trio.from_thread.run(joining_started)  # type: ignore[arg-type]
                context = browser.new_context()
                page = context.new_page()
                page.add_init_script(HOOK)
                page.goto(url)
                page.wait_for_function("window.__firstFrame !== null", timeout=15_000)
                first = page.evaluate("window.__firstFrame")
                time.sleep(max(0.0, 3.0 - first))
                lags = []
                for _ in range(12):
                    lag = page.evaluate(LAG)
                    if lag is not None:
                        lags.append(lag)
                    time.sleep(0.25)
                context.close()
                if kind == "joining":
                    trio.from_thread.run(joining_stopped)  # type: ignore[arg-type]
                time.sleep(0.5)  # LINGER=0: the upstream is gone before the next cold round
                results.append((kind, first, statistics.median(lags)))
        finally:
            browser.close()
    return results


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.browser")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each kind, alternating")
    parser.add_argument("--only", choices=["stock", "low latency", "viewer page", "viewer page mpegts.js"],
                        action="append",
                        help="measure only this page (repeatable)")
    args = parser.parse_args(argv)
    env = {**os.environ, "DATABASE_URL": "sqlite:///:memory:", "LINGER": "0", "LOG_LEVEL": "WARNING"}
    async with camera_and_server(env) as (url, server, nursery):
        base = await server.url()
        host, port = base.removeprefix("http://").split(":")
        other: list[LeanViewer] = []
        joiner = [""]  # the other viewer's resource: in the format of the page under test

        async def joining_started() -> None:
            viewer = LeanViewer(host, int(port), joiner[0])
            await viewer.connect()
            nursery.start_soon(viewer.run)
            with trio.fail_after(15):
                await viewer.got_media.wait()
            other.append(viewer)

        async def joining_stopped() -> None:
            await other.pop().aclose()

        kinds = ["cold", "joining"] * args.rounds
        print("\n## Players in headless Chromium (minimal.html: mpegts.js on /ws/stream.ts; the viewer page: "
              "native MSE on fMP4, or mpegts.js on /ws/stream)")
        print("| config | start | rounds | first frame after navigation, median (max) s "
              "| live latency, median (max) s |")
        print("|---|---|---|---|---|")
        async with httpx.AsyncClient(base_url=base) as http:
            created = await http.post("/api/streams/", json={"name": "bench", "url": url})
        stream_id = created.json()["id"]
        ts, fmp4 = f"/ws/stream.ts?id={stream_id}", f"/ws/stream.ts?id={stream_id}&format=fmp4"
        pages = (("stock", f"/static/minimal.html?id={stream_id}", ts),
                 ("low latency", f"/static/minimal.html?id={stream_id}&lowlatency", ts),
                 ("viewer page", "/", fmp4),  # joining: the stream and its remuxer already run
                 ("viewer page mpegts.js", "/?player=mpegts", ts))
        for config, path, resource in pages:
            if args.only and config not in args.only:
                continue
            joiner[0] = resource
            results = await trio.to_thread.run_sync(partial(
                _rounds, f"{base}{path}", kinds, joining_started, joining_stopped))
            for kind in ("cold", "joining"):
                firsts = [f for k, f, _ in results if k == kind]
                lags = [lag for k, _, lag in results if k == kind]
                print(f"| {config} | {kind} | {len(firsts)} | {statistics.median(firsts):.3f} ({max(firsts):.3f}) "
                      f"| {statistics.median(lags):.3f} ({max(lags):.3f}) |")

if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
