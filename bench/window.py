"""`python -m bench.window [--viewers 400] [--repeat 3]`: the coalescing window, on and off.

Under load (from `batch_from` viewers on) the pump waits up to `batch_window` (40 ms, one
frame at 25 fps) after a read of FFmpeg's output for what follows, and publishes it all as
one chunk: fewer, larger writes to every viewer. This measures the server with the window
and without it (0), in alternating runs, N viewers from `wsload`: the server runs in this
process (the engine's config is set on the running registry), so this process's CPU is
the server's; FFmpeg's is its child's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import attrs
import trio

from tests.helpers import start_server

from .__main__ import children, cpu_seconds, start_camera
from .load import LoadClient


async def run(window: float, n: int, seconds: float) -> tuple[float, float, float]:
    """(server CPU %, FFmpeg CPU %, messages a second per viewer) with this window."""
    async with trio.open_nursery() as nursery:
        camera, url = await start_camera()
        server = await start_server(nursery, max_connections_per_client=100_000, max_streams_per_client=1000,
                                    rate_limit=(0.0, 0.0))
        assert server.registry is not None
        server.registry.config = attrs.evolve(server.registry.config, batch_window=window)
        host, port = server.base.removeprefix("http://").split(":")
        client = await LoadClient.start(host, int(port), f"/ws/stream?url={url}", n, start=True)
        try:
            await trio.sleep(3)
            ffmpeg = [pid for pid in children(os.getpid()) if pid not in (camera.pid, client.pid)]
            me0, ff0, before = time.process_time(), sum(map(cpu_seconds, ffmpeg)), await client.stats()
            await trio.sleep(seconds)
            me, ff, after = time.process_time() - me0, sum(map(cpu_seconds, ffmpeg)) - ff0, await client.stats()
        finally:
            await client.aclose()
            camera.terminate()
            await camera.wait()
        nursery.cancel_scope.cancel()
    return 100 * me / seconds, 100 * ff / seconds, (after.messages - before.messages) / n / seconds


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.window")
    parser.add_argument("--viewers", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args(argv)
    results: dict[float, list[tuple[float, float, float]]] = {0.04: [], 0.0: []}
    print(f"\n## the coalescing window, {args.viewers} viewers, {args.seconds:g} s per run")
    print("| window | server CPU % | FFmpeg CPU % | msgs/s per viewer |")
    print("|---|---|---|---|")
    for _ in range(args.repeat):
        for window in results:
            row = await run(window, args.viewers, args.seconds)
            results[window].append(row)
            print(f"| {window * 1000:.0f} ms | {row[0]:.1f} | {row[1]:.1f} | {row[2]:.1f} |")
    for window, rows in results.items():
        print(f"- {window * 1000:.0f} ms: server + FFmpeg median "
              f"{statistics.median(r[0] + r[1] for r in rows):.1f} %")


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
