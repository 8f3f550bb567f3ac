"""The relay's CPU cost: `python -m bench.camera_relay [--seconds 20] [--repeat 3] [--bitrate 2M,4M]`.

Since issue 21 FFmpeg reads every camera through the server's relay (supervisors/camera/relay.py),
which copies the camera's interleaved RTP to FFmpeg on loopback. This measures what that
copy costs: the test camera (a process of its own, noise at the given bitrate, TCP
transport) is read by the server's FFmpeg command line, once directly and once through the
relay running in this process, alternating; FFmpeg writes to /dev/null. It prints the
relay's CPU (this process: user + system, children excluded) as a percentage of one core,
per Mbit/s relayed, beside FFmpeg's own CPU in both runs.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys

import attrs
import trio

from supervisors.camera.relay import Relay, Target, checked, connect, open_relay
from supervisors.camera.sources import ANY_SOURCE
from supervisors.ffmpeg import Source, build_argv
from tests.camera import bundled_ffmpeg

from .__main__ import cpu_seconds, start_camera


@attrs.frozen
class Run:
    relay_cpu: float  # % of a core, this process
    ffmpeg_cpu: float  # % of a core
    mbits: float  # relayed (0 when direct)


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def read(url: str, seconds: float, *, relayed: bool) -> Run:
    """FFmpeg as the server runs it, for `seconds`, directly or through the relay."""
    source = Source(url)
    async with trio.open_nursery() as nursery:
        if relayed:
            target = await checked(url, ANY_SOURCE)
            relay = await nursery.start(_relay, target)
            source = Source(relay.url)
        argv = build_argv(bundled_ffmpeg(), source, timeout=10)
        process = await trio.lowlevel.open_process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await trio.sleep(2)  # past the start and the first GOP's burst
        mine, theirs, wall = own_cpu(), cpu_seconds(process.pid), trio.current_time()
        relayed_bytes = relay.copied if relayed else 0
        await trio.sleep(seconds)
        elapsed = trio.current_time() - wall
        run = Run(relay_cpu=100 * (own_cpu() - mine) / elapsed, ffmpeg_cpu=100 * (cpu_seconds(process.pid) - theirs) / elapsed,
                  mbits=((relay.copied if relayed else 0) - relayed_bytes) * 8 / elapsed / 1e6)
        process.kill()
        await process.wait()
        nursery.cancel_scope.cancel()
    return run


async def _relay(target: Target, *, task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED) -> None:
    """The relay of one attempt, as the server's runner opens it."""
    camera = await connect(target)
    async with open_relay(target, camera, ANY_SOURCE) as relay:
        task_status.started(relay)
        await trio.sleep_forever()


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.camera_relay")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bitrate", default="2M,4M")
    args = parser.parse_args(argv)
    print("| camera | runs | relay CPU (% of a core) | per Mbit/s | FFmpeg direct | FFmpeg relayed | relayed Mbit/s |")
    print("|---|---|---|---|---|---|---|")
    for bitrate in args.bitrate.split(","):
        camera, url = await start_camera(size="1280x720", bitrate=bitrate)
        try:
            direct: list[Run] = []
            relayed: list[Run] = []
            for _ in range(args.repeat):  # alternating, so that both see the same machine
                direct.append(await read(url, args.seconds, relayed=False))
                relayed.append(await read(url, args.seconds, relayed=True))
        finally:
            camera.kill()
            await camera.wait()
        relay_cpu = statistics.median(r.relay_cpu for r in relayed)
        mbits = statistics.median(r.mbits for r in relayed)
        print(f"| {bitrate}bit/s 1280x720 | {args.repeat} | {relay_cpu:.2f} | {relay_cpu / mbits:.3f} | "
              f"{statistics.median(r.ffmpeg_cpu for r in direct):.2f} | "
              f"{statistics.median(r.ffmpeg_cpu for r in relayed):.2f} | {mbits:.2f} |")


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
