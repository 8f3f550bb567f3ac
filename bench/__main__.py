"""Benchmarks, all on loopback: `python -m bench [latency] [fanout] [slow] [--viewers 1,10,50]`.

Starts the test camera (a real 2 Mbit/s H.264 noise source, 2 s GOP) and the server
(`rtsp-viewer serve`) as processes of their own, drives them with WebSocket viewers (the
C client `wsload.c` for fan-out and idle, lean Python viewers for the rest), and prints tables:

- latency: `start` → first binary frame for a cold stream (vs bare FFmpeg with the same
  input flags, and with FFmpeg's default probing) and for a viewer joining a running stream;
- fanout: for N viewers, server and FFmpeg CPU, this load client's own CPU, the slowest
  viewer's share of the stream's rate, server RSS (`--fmp4`: fMP4 viewers too, whose
  FFmpeg CPU includes the remuxer's);
- slow: server RSS with 5 viewers that never read (and 1 that does), over 120 s;
- idle (on request): RSS and CPU of 5000 connections that never start (`--idle-connections`);
- login (on request): what signing in costs, a wrong name against a wrong password (bench/login.py).
"""

from __future__ import annotations

import argparse
import os
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from app.cli.main import PING_INTERVAL
from supervisors.ffmpeg import READ_SIZE, Source, build_argv
from tests.camera import bundled_ffmpeg
from tests.helpers import BIN, Process, children, rss_kib, spawn, wait_for
from tests.lean import LeanViewer

from . import cluster, login
from .load import LoadClient, Stats

TICK = os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[float, float]:
    """CPU seconds of a process: (user, system)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] if ordered else float("nan")



class Rig:
    """A relay server process (ours, or rtsp-relay for reference) and viewers against it."""

    def __init__(self, camera_url: str, pid: int, base: str, *, resource: str | None = None,
                 needs_start: bool = True, deflate: bool = True, tls: ssl.SSLContext | None = None) -> None:
        self.camera_url = camera_url
        self.pid = pid
        self.tls = tls
        self.host, port = base.split("://", 1)[1].split(":")
        self.port = int(port)
        self.resource = resource or f"/ws/stream?url={camera_url}"
        self.needs_start = needs_start
        self.deflate = deflate

    async def viewer(self, nursery: trio.Nursery, *, read: bool = True) -> LeanViewer:
        viewer = LeanViewer(self.host, self.port, self.resource, deflate=self.deflate, tls=self.tls)
        await viewer.connect()
        if read:
            nursery.start_soon(viewer.run)
        return viewer

    def cpu(self) -> tuple[float, float]:
        """CPU seconds of the server process and of its children (FFmpeg)."""
        return cpu_seconds(self.pid), sum(cpu_seconds(c) for c in children(self.pid))


RELAY_DIR = Path(__file__).resolve().parent / ".relay"
RELAY_JS = """
const app = require('express')();
const { proxy } = require('rtsp-relay')(app);
app.ws('/api/stream', proxy({ url: process.env.CAMERA_URL, transport: 'tcp', useNativeFFmpeg: true,
                              additionalFlags: ['-codec:v', 'copy'] }));
const server = app.listen(0, '127.0.0.1', () => console.log('PORT ' + server.address().port));
"""


async def start_relay(camera_url: str, *, deflate: bool) -> tuple[trio.Process, Rig]:
    """rtsp-relay 1.9 in copy mode on the same FFmpeg, installed for the benchmark only."""
    if not (RELAY_DIR / "node_modules/rtsp-relay").exists():
        await trio.run_process(["npm", "install", "--prefix", str(RELAY_DIR), "--ignore-scripts",
                                "--no-audit", "--no-fund", "rtsp-relay@1.9.0", "express@4"])
    bindir = RELAY_DIR / "bin"
    bindir.mkdir(exist_ok=True)
    if not (bindir / "ffmpeg").exists():
        (bindir / "ffmpeg").symlink_to(bundled_ffmpeg())
    (RELAY_DIR / "server.js").write_text(RELAY_JS)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "CAMERA_URL": camera_url}
    process = await trio.lowlevel.open_process(["node", "server.js"], cwd=RELAY_DIR, env=env,
                                               stdout=subprocess.PIPE)
    assert process.stdout is not None
    line = b""
    with trio.fail_after(30):
        while not line.endswith(b"\n"):
            line += await process.stdout.receive_some(1)
    port = int(line.split()[1])
    return process, Rig(camera_url, process.pid, f"http://127.0.0.1:{port}", resource="/api/stream",
                        needs_start=False, deflate=deflate)


async def start_camera(codec: str = "h264", audio: bool = False, burst: bool = True,
                       size: str = "640x360", bitrate: str = "2M") -> tuple[trio.Process, str]:
    argv = [sys.executable, "-m", "tests.camera", "--size", size, "--bitrate", bitrate, "--noise",
            "--gop", "50", "--codec", codec, *(["--audio"] if audio else []), *([] if burst else ["--no-burst"])]
    process = await trio.lowlevel.open_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout is not None
    line = b""
    with trio.fail_after(30):
        while not line.endswith(b"\n"):
            line += await process.stdout.receive_some(1)
    return process, line.decode().strip()


async def first_byte_of_bare_ffmpeg(url: str, *, default_probe: bool) -> float:
    argv = build_argv(bundled_ffmpeg(), Source(url), timeout=10)
    if default_probe:
        i = argv.index("-probesize")
        del argv[i : i + 4]
    start = trio.current_time()
    process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    await process.stdout.receive_some(READ_SIZE)
    elapsed = trio.current_time() - start
    process.kill()
    await process.wait()
    return elapsed


async def started(rig: Rig, nursery: trio.Nursery, times: list[float]) -> LeanViewer:
    """A new viewer after `start`; appends the seconds to its first binary frame to times."""
    viewer = await rig.viewer(nursery)
    await viewer.send_action("start")
    with trio.fail_after(15):
        await viewer.got_media.wait()
    assert viewer.started_at is not None and viewer.first_media is not None
    times.append(viewer.first_media - viewer.started_at)
    return viewer


async def bench_latency(rig: Rig, rounds: int) -> None:
    bare: list[float] = []
    probed: list[float] = []
    cold: list[float] = []
    joins: list[float] = []
    async with trio.open_nursery() as nursery:
        for _ in range(rounds):  # interleaved, so that each kind sees the same conditions
            bare.append(await first_byte_of_bare_ffmpeg(rig.camera_url, default_probe=False))
            await trio.sleep(0.3)
            probed.append(await first_byte_of_bare_ffmpeg(rig.camera_url, default_probe=True))
            await trio.sleep(0.3)
            viewer = await started(rig, nursery, cold)  # LINGER=0: every start is a cold start
            await viewer.aclose()
            await trio.sleep(0.5)
        anchor = await rig.viewer(nursery)
        await anchor.send_action("start")
        await trio.sleep(2)
        for i in range(max(rounds, 20)):
            await trio.sleep(0.137 * (i % 7) + 0.05)  # join at scattered points of the GOP
            viewer = await started(rig, nursery, joins)
            assert viewer.first_chunk[:1] == b"\x47" and viewer.first_chunk[1] & 0x1F == 0  # PAT first
            await viewer.aclose()
        await anchor.aclose()
        nursery.cancel_scope.cancel()
    print("\n## latency: `start` -> first binary frame (s)")
    print("| what | median | p95 | n |")
    print("|---|---|---|---|")
    for name, values in (("bare FFmpeg, our input flags (first stdout byte)", bare),
                         ("bare FFmpeg, default probing (first stdout byte)", probed),
                         ("cold start, first viewer", cold), ("join a running stream", joins)):
        print(f"| {name} | {median(values):.3f} | {p95(values):.3f} | {len(values)} |")
    print(f"\ncold start / bare FFmpeg (medians): {median(cold) / median(bare):.2f}")


async def bench_fanout(rigs: dict[str, Rig], counts: list[int], seconds: float, repeat: int,
                       client: str = "c") -> None:
    """Each N measured `repeat` times per server, the servers in alternation (the host's
    noise drifts over minutes), then the median of service + FFmpeg CPU per server."""
    print("\n## fan-out: N viewers of one 2 Mbit/s stream, measured over", seconds, "s")
    print("| server | N | server CPU % (of it user) | FFmpeg CPU % | load client CPU % | slowest viewer % of rate | "
          "median viewer % | server RSS MiB | msgs/s per viewer |")
    print("|---|---|---|---|---|---|---|---|---|")
    totals: dict[tuple[int, str], list[float]] = {}
    memory: dict[tuple[int, str], list[float]] = {}
    for n in counts:
        for _ in range(repeat):
            for name, rig in rigs.items():
                cpu, rss = await fanout_row(name, rig, n, seconds, client)
                totals.setdefault((n, name), []).append(cpu)
                memory.setdefault((n, name), []).append(rss)
    print(f"\nservice + FFmpeg CPU %, median of {repeat} alternating runs:")
    for n in counts:
        print(f"- N = {n}: " + ", ".join(f"{name} {median(totals[n, name]):.1f}" for name in rigs))
    if len(counts) > 1:
        print("\nserver RSS per viewer (least-squares slope of the median RSS over N = "
              f"{', '.join(map(str, counts))}):")
        for name in rigs:
            print(f"- {name}: {slope(counts, [median(memory[n, name]) for n in counts]):.1f} KiB per viewer")


def slope(xs: list[int], ys: list[float]) -> float:
    """The least-squares slope of ys over xs."""
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)


class PythonLoad:
    """The load client as LeanViewers in this process (`--client python`)."""

    def __init__(self, viewers: list[LeanViewer]) -> None:
        self.viewers = viewers

    async def stats(self) -> Stats:
        return Stats(sum(not v.closed for v in self.viewers), sum(v.messages for v in self.viewers),
                     [v.media_bytes for v in self.viewers])

    def cpu(self) -> float:
        return time.process_time()


@asynccontextmanager
async def load(rig: Rig, n: int, client: str) -> AsyncIterator[PythonLoad | LoadClient]:
    """N playing viewers of the rig: `wsload` (client "c") or LeanViewers in this process."""
    if client == "c":
        started = await LoadClient.start(rig.host, rig.port, rig.resource, n, start=rig.needs_start,
                                         batch=os.environ.get("BENCH_CLIENT_POLICY", "batch") == "batch")
        try:
            yield started
        finally:
            await started.aclose()
        return
    async with trio.open_nursery() as nursery:
        viewers = [await rig.viewer(nursery) for _ in range(n)]
        for viewer in viewers:
            if rig.needs_start:
                await viewer.send_action("start")
        yield PythonLoad(viewers)
        for viewer in viewers:
            await viewer.aclose()
        nursery.cancel_scope.cancel()


def client_cpu(viewers: PythonLoad | LoadClient) -> float:
    return viewers.cpu() if isinstance(viewers, PythonLoad) else cpu_seconds(viewers.pid)


async def fanout_row(name: str, rig: Rig, n: int, seconds: float, client: str) -> tuple[float, float]:
    """Print one row; return (service + FFmpeg CPU %, server RSS KiB)."""
    async with load(rig, n, client) as viewers:
        await trio.sleep(3)  # everyone playing, queues settled
        server0, ffmpeg0 = rig.cpu()
        user0 = cpu_split(rig.pid)[0]
        me0 = client_cpu(viewers)
        before = await viewers.stats()
        wall0 = trio.current_time()
        await trio.sleep(seconds)
        wall = trio.current_time() - wall0
        server1, ffmpeg1 = rig.cpu()
        user = cpu_split(rig.pid)[0] - user0
        me = client_cpu(viewers) - me0
        after = await viewers.stats()
        got = [b - a for a, b in zip(before.bytes, after.bytes, strict=True)]
        rate = max(got)
        msgs = (after.messages - before.messages) / n / wall
        rss_kib_now = rss_kib(rig.pid)
        rss = rss_kib_now / 1024
        server, ffmpeg = 100 * (server1 - server0) / wall, 100 * (ffmpeg1 - ffmpeg0) / wall
        print(f"| {name} | {n} | {server:.1f} ({100 * user / wall:.1f}) | {ffmpeg:.1f} "
              f"| {100 * me / wall:.1f} | {100 * min(got) / rate:.1f} | {100 * median(got) / rate:.1f} "
              f"| {rss:.1f} | {msgs:.1f} |")
    await trio.sleep(1)
    return server + ffmpeg, rss_kib_now


async def bench_idle(rig: Rig, n: int, seconds: float) -> None:
    """What N connections that never start cost the server: RSS per connection, and CPU
    between pings (from the last connection opened to PING_INTERVAL after the first) and
    over `seconds` of pings (each connection is pinged every PING_INTERVAL)."""
    warm = await LoadClient.start(rig.host, rig.port, rig.resource, 10, start=False)
    await trio.sleep(1)
    await warm.aclose()
    await trio.sleep(2)
    rss0 = rss_kib(rig.pid)
    opening = trio.current_time()
    idle = await LoadClient.start(rig.host, rig.port, rig.resource, n, start=False)
    opened = trio.current_time()
    try:
        await trio.sleep(0.5)
        rss1 = rss_kib(rig.pid)
        quiet = opening + PING_INTERVAL - 0.5 - trio.current_time()  # before the first ping is due
        cpu0 = rig.cpu()[0]
        await trio.sleep(max(quiet, 0))
        between = 100 * (rig.cpu()[0] - cpu0) / quiet if quiet > 0 else float("nan")
        cpu0 = rig.cpu()[0]
        await trio.sleep(seconds)
        pinging = 100 * (rig.cpu()[0] - cpu0) / seconds
        stats = await idle.stats()
        client = cpu_seconds(idle.pid)
    finally:
        await idle.aclose()
    print(f"\n## idle: {n} connections, open and never started")
    print(f"- opened in {opened - opening:.1f} s; {stats.open} still open at the end")
    print(f"- server RSS {rss0 / 1024:.1f} MiB before, {rss1 / 1024:.1f} MiB with them: "
          f"**{(rss1 - rss0) / n:.1f} KiB per connection**")
    print(f"- server CPU between pings ({max(quiet, 0):.1f} s before the first was due): {between:.2f} %")
    print(f"- server CPU over {seconds:g} s of pings ({n / PING_INTERVAL:.0f} a second): {pinging:.2f} %, "
          f"{pinging / 100 / (n / PING_INTERVAL) * 1e6:.0f} µs of CPU per ping and its pong")
    print(f"- load client CPU, all of its life: {client:.2f} s")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


async def bench_teardown(rig: Rig, rounds: int, loops: int) -> None:
    """Last viewer leaves -> FFmpeg gone (LINGER=0 here); then start/stop loops leak nothing."""
    gone: list[float] = []
    async with trio.open_nursery() as nursery:
        fds0 = open_fds(rig.pid)
        for _ in range(rounds):
            viewer = await started(rig, nursery, [])
            await trio.sleep(0.3)
            left = trio.current_time()
            await viewer.aclose()
            await wait_for(lambda: not children(rig.pid), within=10, step=0.005)
            gone.append(trio.current_time() - left)
        for _ in range(loops):
            viewer = await started(rig, nursery, [])
            await viewer.send_action("stop")
            await viewer.wait_text('"stopped"')
            await viewer.aclose()
        with trio.move_on_after(10):
            await wait_for(lambda: not children(rig.pid) and open_fds(rig.pid) <= fds0, within=10)
        nursery.cancel_scope.cancel()
    print("\n## teardown (LINGER=0)")
    print(f"last viewer leaves -> FFmpeg reaped: median {median(gone):.3f} s, p95 {p95(gone):.3f} s, "
          f"n={len(gone)}")
    print(f"after {loops} start/stop loops: {len(children(rig.pid))} FFmpeg left, server fds "
          f"{fds0} before, {open_fds(rig.pid)} after")


async def bench_slow(rig: Rig, seconds: float, server: Process) -> None:
    """Server RSS with 5 viewers that never read (and 1 that does), sampled every 5 s."""
    async with trio.open_nursery() as nursery:
        reader = await rig.viewer(nursery)
        await reader.send_action("start")
        stuck = [await rig.viewer(nursery, read=False) for _ in range(5)]
        for viewer in stuck:
            await viewer.send_action("start")
        samples = []
        start = trio.current_time()
        while trio.current_time() - start < seconds:
            samples.append((trio.current_time() - start, rss_kib(rig.pid) / 1024))
            await trio.sleep(5)
        samples.append((trio.current_time() - start, rss_kib(rig.pid) / 1024))
        rate = reader.media_bytes * 8 / seconds / 1e6
        for viewer in [reader, *stuck]:
            await viewer.aclose()
        nursery.cancel_scope.cancel()
    print(f"\n## slow viewers: 5 never reading + 1 reading, {seconds:g} s")
    print("| t (s) | server RSS MiB |")
    print("|---|---|")
    for t, rss in samples:
        print(f"| {t:.0f} | {rss:.1f} |")
    print(f"\nthe reading viewer got {rate:.2f} Mbit/s; SLOW_CONSUMER logged "
          f"{server.stderr.count('SLOW_CONSUMER')} times")


@asynccontextmanager
async def camera_and_server(env: dict[str, str], **camera: Any) -> AsyncIterator[tuple[str, Process, trio.Nursery]]:
    """The bench's camera and an `rtsp-viewer serve` process, ended (and reaped) after."""
    process, url = await start_camera(**camera)
    try:
        async with trio.open_nursery() as nursery:
            server = await spawn(nursery, [str(BIN / "rtsp-viewer"), "serve", "--port", "0"], env)
            yield url, server, nursery
            server.process.terminate()
            await server.process.wait()
            nursery.cancel_scope.cancel()
    finally:
        process.terminate()
        with trio.CancelScope(shield=True):
            await process.wait()


def with_tls(env: dict[str, str]) -> tuple[dict[str, str], ssl.SSLContext]:
    """The server's env with CERTFILE/KEYFILE of a test CA's certificate for 127.0.0.1, and
    a client context that trusts it."""
    import tempfile

    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    folder = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    issued.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    issued.private_key_pem.write_to_path(str(folder / "key.pem"))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return {**env, "CERTFILE": str(folder / "cert.pem"), "KEYFILE": str(folder / "key.pem")}, client


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("what", nargs="*", default=["latency", "fanout", "teardown", "slow"])
    parser.add_argument("--viewers", default="1,10,50,100,200")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="fan-out runs per N and server, alternating")
    parser.add_argument("--slow-seconds", type=float, default=120)
    parser.add_argument("--codec", choices=["h264", "h265"], default="h264", help="the camera's codec")
    parser.add_argument("--audio", action="store_true", help="the camera also sends AAC audio")
    parser.add_argument("--no-burst", action="store_true",
                        help="the camera starts a player at its next keyframe instead of the last one")
    parser.add_argument("--no-relay", action="store_true", help="skip the rtsp-relay reference (needs node, npm)")
    parser.add_argument("--tls", action="store_true", help="ours serves WSS itself (CERTFILE/KEYFILE, a test CA)")
    parser.add_argument("--no-deflate", action="store_true",
                        help="viewers do not offer permessage-deflate (browsers do)")
    parser.add_argument("--fmp4", action="store_true",
                        help="fan-out also with fMP4 viewers (format=fmp4), alternating with MPEG-TS ones")
    parser.add_argument("--idle-connections", type=int, default=5000, help="idle: how many connections")
    parser.add_argument("--cluster-viewers", type=int, default=300, help="cluster: viewers on each of 3 nodes")
    parser.add_argument("--worker-viewers", default="1600,2400,3200,4000,4800", help="workers: the N to try")
    parser.add_argument("--failover-rounds", type=int, default=5)
    parser.add_argument("--login-rounds", type=int, default=40, help="login: tries of each kind")
    parser.add_argument("--client", choices=["c", "python"], default="c",
                        help="fan-out's load client: wsload.c (one C process) or lean viewers in this process")
    args = parser.parse_args(argv)
    # the load client is one address standing for many viewers: the per-client limits
    # (RATE_LIMIT, MAX_CONNECTIONS_PER_CLIENT, MAX_STREAMS_PER_CLIENT) would stop it
    env = {**os.environ, "DATABASE_URL": "sqlite:///:memory:", "LINGER": "0", "LOG_LEVEL": "WARNING",
           "MAX_STREAMS_PER_CLIENT": "1000", "MAX_CONCURRENT_STREAMS": "100", "RATE_LIMIT": "off",
           "MAX_CONNECTIONS_PER_CLIENT": "100000", "START_WITHIN": "300"}
    if "login" in args.what:
        await login.bench_login(env, args.login_rounds)
        return
    if scale_out := [what for what in args.what if what in ("cluster", "workers", "failover")]:
        await bench_scale_out(scale_out, args, env)
        return
    tls = None
    if args.tls:
        env, tls = with_tls(env)
    async with camera_and_server(env, codec=args.codec, audio=args.audio, burst=not args.no_burst) as (url, server, _):
        rig = Rig(url, server.process.pid, await server.url(), deflate=not args.no_deflate, tls=tls)
        print(f"camera {url} ({args.codec}{', with audio' if args.audio else ''}); server {rig.host}:{rig.port} (pid {server.process.pid}); "
              f"{os.cpu_count()} cores")
        if "latency" in args.what:
            await bench_latency(rig, args.rounds)
        if "fanout" in args.what:
            rigs = {"ours": rig}
            if args.fmp4:
                rigs["ours fMP4"] = Rig(url, server.process.pid, await server.url(), deflate=not args.no_deflate,
                                        tls=tls, resource=f"/ws/stream?url={url}&format=fmp4")
            relay = None
            if not args.no_relay:
                relay, rigs["rtsp-relay"] = await start_relay(url, deflate=not args.no_deflate)
            await bench_fanout(rigs, [int(n) for n in args.viewers.split(",")], args.seconds, args.repeat,
                               args.client)
            if relay is not None:
                relay.terminate()
                await relay.wait()
        if "idle" in args.what:
            await bench_idle(rig, args.idle_connections, 30)
        if "teardown" in args.what:
            await bench_teardown(rig, args.rounds, 100)
        if "slow" in args.what:
            await bench_slow(rig, args.slow_seconds, server)


async def bench_scale_out(what: list[str], args: argparse.Namespace, env: dict[str, str]) -> None:
    """The scale-out benchmarks (bench/cluster.py), on the bench's camera."""
    process, url = await start_camera()
    try:
        print(f"camera {url}; {os.cpu_count()} cores")
        if "cluster" in what:
            await cluster.bench_cluster(env, url, args.cluster_viewers, args.seconds)
        if "workers" in what:
            await cluster.bench_workers(env, url, [int(n) for n in args.worker_viewers.split(",")], args.seconds)
        if "failover" in what:
            await cluster.bench_failover(env, url, args.failover_rounds)
    finally:
        process.terminate()
        with trio.CancelScope(shield=True):
            await process.wait()


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
