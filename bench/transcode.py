"""`python -m bench.transcode`: what one stream's media profile costs this machine.

For an H.265 camera (2 Mbit/s noise, 25 fps) at 640x360 and at 1280x720: the CPU of the
stream's FFmpeg (one core = 100 %) and of the server, with one viewer, for the profiles
`copy` (the reference: no decoding), `h264` (libx264 ultrafast zerolatency) and `mpeg1`,
each measured `--repeat` times in alternation over `--seconds` s after 3 s of play.
"""

from __future__ import annotations

import argparse
import os
import sys

import httpx
import trio

from bench.__main__ import Rig, camera_and_server, median

PROFILES = ("copy", "h264", "mpeg1")


async def measure(rig: Rig, base: str, url: str, video: str, seconds: float) -> tuple[float, float, int]:
    """(FFmpeg CPU %, server CPU %, media bytes/s) of one viewer of a stream with this profile."""
    async with httpx.AsyncClient(base_url=base) as http:
        created = (await http.post("/api/streams/", json={"name": video, "url": url, "video": video})).json()
    rig.resource = f"/ws/stream?id={created['id']}"
    async with trio.open_nursery() as nursery:
        viewer = await rig.viewer(nursery)
        await viewer.send_action("start")
        await trio.sleep(3)
        server0, ffmpeg0 = rig.cpu()
        bytes0 = viewer.media_bytes
        await trio.sleep(seconds)
        server1, ffmpeg1 = rig.cpu()
        rate = (viewer.media_bytes - bytes0) / seconds
        await viewer.aclose()
        nursery.cancel_scope.cancel()
    async with httpx.AsyncClient(base_url=base) as http:
        await http.delete(f"/api/streams/{created['id']}/")
    await trio.sleep(1)
    return 100 * (ffmpeg1 - ffmpeg0) / seconds, 100 * (server1 - server0) / seconds, int(rate)


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.transcode")
    parser.add_argument("--sizes", default="640x360,1280x720")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    env = {**os.environ, "DATABASE_URL": "sqlite:///:memory:", "LINGER": "0", "LOG_LEVEL": "WARNING",
           "RATE_LIMIT": "off"}
    print(f"\n## the cost of a media profile: one viewer of an H.265 camera, {os.cpu_count()} cores")
    print("| camera | profile | FFmpeg CPU %, median (runs) | server CPU % | media kbit/s |")
    print("|---|---|---|---|---|")
    for size in args.sizes.split(","):
        async with camera_and_server(env, codec="h265", size=size) as (url, server, _):
            base = await server.url()
            rig = Rig(url, server.process.pid, base)
            runs: dict[str, list[tuple[float, float, int]]] = {p: [] for p in PROFILES}
            for _ in range(args.repeat):
                for profile in PROFILES:
                    runs[profile].append(await measure(rig, base, url, profile, args.seconds))
            for profile in PROFILES:
                ffmpeg = [r[0] for r in runs[profile]]
                print(f"| {size} | {profile} | {median(ffmpeg):.1f} ({', '.join(f'{f:.1f}' for f in ffmpeg)}) "
                      f"| {median([r[1] for r in runs[profile]]):.1f} "
                      f"| {median([r[2] * 8 / 1000 for r in runs[profile]]):.0f} |")


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
