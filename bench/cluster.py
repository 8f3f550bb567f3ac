"""Scale-out benchmarks (issue 23): `python -m bench cluster`, `workers`, `failover`.

- cluster: PostgreSQL, three node processes on 127.0.0.2-4 and one camera; N viewers on
  each node (the C load client), then the same 3N viewers on the camera's owner alone.
  Per node: its CPU, its FFmpeg's, the slowest viewer's share of the stream's rate and
  messages per viewer per second; the owner's extra cost for feeding the other nodes is
  its CPU minus an edge's, at the same viewers each.
- workers: `rtsp-viewer serve` against `serve --workers 2` on a SQLite file, one
  registered stream, N viewers through the one port; a viewer is served live while it gets
  a message per publish (12.5 or more a second, as at 400 viewers) and every byte.
- failover: first, a PATCH on a node that does not hold the camera, until every node's
  viewers hear `connecting`; then a viewer on each node that does not hold the camera; the owner is killed
  (SIGKILL) or frozen (SIGSTOP) and the time until every viewer hears `playing` again is
  taken, five times each; LEASE_SECONDS 2 and FFMPEG_TIMEOUT 4, as in the tests.
"""

from __future__ import annotations

import os
import signal
import statistics
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path

import httpx
import trio

from tests.cluster import HOSTS, SECRET
from tests.helpers import BIN, Process, children, ffmpeg_children, open_viewer, rss_kib, spawn, wait_for
from tests.postgres import Postgres

from .load import LoadClient

LIVE_MESSAGES = 12.5  # a message per publish (13-14 a second at 400 viewers, bench/README.md)
TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and every process under it."""
    return cpu(pid) + sum(tree_cpu(child) for child in children(pid))


def ffmpeg_cpu(pid: int) -> float:
    return sum(tree_cpu(child) for child in children(pid))


@asynccontextmanager
async def nodes_on_postgres(env: dict[str, str], count: int = 3) -> AsyncIterator[tuple[Postgres, str, list[Process]]]:
    postgres = Postgres()
    await trio.to_thread.run_sync(postgres.start)
    try:
        url = await trio.to_thread.run_sync(postgres.new_database)
        node_env = {**env, "DATABASE_URL": url, "SECRET_KEY": SECRET, "LEASE_SECONDS": "2", "FFMPEG_TIMEOUT": "4"}
        async with trio.open_nursery() as nursery:
            nodes = [await spawn(nursery, [str(BIN / "rtsp-viewer"), "serve", "--host", host, "--port", "0"], node_env)
                     for host in HOSTS[:count]]
            for node in nodes:
                await node.url()
            yield postgres, url, nodes
            for node in nodes:
                if node.process.returncode is None:
                    node.process.terminate()
            nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(postgres.close)


async def change_reaches_every_node(urls: list[str], stream: int, rounds: int) -> None:
    """Seconds from a PATCH answered by a node that does not hold the camera until the
    viewers on every node hear `connecting` (the restart reached the owner, and each node
    restarted its own upstream)."""
    spans = []
    async with AsyncExitStack() as stack:
        viewers = []
        for url in urls:
            viewers.append(await stack.enter_async_context(open_viewer(url.replace("http", "ws", 1)
                                                                       + f"/ws/stream?id={stream}")))
            await viewers[-1].play(within=30)
        owner = await owner_of(urls[0], stream)
        edge = next(url for url in urls if url != owner)
        async with httpx.AsyncClient(base_url=edge, timeout=10) as http:
            for round_ in range(rounds):
                started = trio.current_time()
                answer = await http.patch(f"/api/streams/{stream}/", json={"transport": ["udp", "tcp"][round_ % 2]})
                assert answer.status_code == 200, answer.text
                for viewer in viewers:
                    await viewer.status("connecting", within=10)
                spans.append(trio.current_time() - started)
                for viewer in viewers:
                    await viewer.status("playing", within=30)
    print(f"- a PATCH on a node that does not hold the camera, until every node's viewers hear `connecting`: "
          f"median {statistics.median(spans):.2f} s (max {max(spans):.2f}; each {', '.join(f'{s:.2f}' for s in spans)})")


def dropped(pid: int) -> bool:
    return not ffmpeg_children(pid)


async def owner_of(base: str, stream: int) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        for row in (await http.get("/api/cluster/")).json()["nodes"]:
            if stream in row["streams"] and row["alive"]:
                return str(row["url"])
    raise LookupError(f"no node holds stream {stream}")


async def measure(processes: dict[str, int], loads: dict[str, LoadClient], seconds: float) -> list[str]:
    """Table rows: each process's CPU (and its FFmpeg's), and its viewers' service."""
    await trio.sleep(3)  # everyone playing, queues settled
    before = {name: (cpu(pid), ffmpeg_cpu(pid)) for name, pid in processes.items()}
    stats0 = {name: await load.stats() for name, load in loads.items()}
    wall0 = trio.current_time()
    await trio.sleep(seconds)
    wall = trio.current_time() - wall0
    rows = []
    for name, pid in processes.items():
        own, ffmpeg = cpu(pid) - before[name][0], ffmpeg_cpu(pid) - before[name][1]
        row = f"| {name} | {100 * own / wall:.1f} | {100 * ffmpeg / wall:.1f} | {rss_kib(pid) / 1024:.0f} |"
        if name in loads:
            after = await loads[name].stats()
            got = [b - a for a, b in zip(stats0[name].bytes, after.bytes, strict=True)]
            rate = max(got)
            messages = (after.messages - stats0[name].messages) / len(got) / wall
            row += f" {len(got)} | {100 * min(got) / rate:.1f} | {messages:.1f} |"
        else:
            row += " 0 | - | - |"
        rows.append(row)
    return rows


async def bench_cluster(env: dict[str, str], camera_url: str, viewers: int, seconds: float) -> None:
    print(f"\n## cluster: 3 nodes x {viewers} viewers of one 2 Mbit/s camera, then {3 * viewers} on one node; "
          f"over {seconds:g} s")
    async with nodes_on_postgres(env) as (_, _, nodes):
        urls = [await node.url() for node in nodes]
        async with httpx.AsyncClient(base_url=urls[0], timeout=10) as http:
            stream = (await http.post("/api/streams/", json={"name": "cam", "url": camera_url})).json()["id"]
        resource = f"/ws/stream?id={stream}"
        async with open_viewer(urls[0].replace("http", "ws", 1) + resource) as first:  # places the camera
            await first.send("start")
            await first.status("playing", within=20)
            owner = await owner_of(urls[0], stream)
        names = {url: ("owner" if url == owner else "edge") + f" {url.removeprefix('http://')}" for url in urls}
        pids = {names[url]: node.process.pid for url, node in zip(urls, nodes, strict=True)}
        print("| node | node CPU % | its FFmpeg CPU % | RSS MiB | viewers | slowest viewer % of rate | msgs/s per viewer |")
        print("|---|---|---|---|---|---|---|")
        async with AsyncExitStack() as stack:
            loads = {}
            for url in urls:
                host, port = url.removeprefix("http://").split(":")
                loads[names[url]] = await LoadClient.start(host, int(port), resource, viewers, start=True)
                stack.push_async_callback(loads[names[url]].aclose)
            rows = await measure(pids, loads, seconds)
            sessions = sum(len(ffmpeg_children(pid)) for pid in pids.values())
        print("\n".join(rows))
        print(f"\ncamera sessions (FFmpeg reading the camera, all nodes): {sessions}")
        host, port = owner.removeprefix("http://").split(":")
        print(f"\nthe same {3 * viewers} viewers on the owner alone:")
        print("| node | node CPU % | its FFmpeg CPU % | RSS MiB | viewers | slowest viewer % of rate | msgs/s per viewer |")
        print("|---|---|---|---|---|---|---|")
        alone = await LoadClient.start(host, int(port), resource, 3 * viewers, start=True)
        try:
            print("\n".join(await measure({names[owner]: pids[names[owner]]}, {names[owner]: alone}, seconds)))
        finally:
            await alone.aclose()


async def bench_workers(env: dict[str, str], camera_url: str, counts: list[int], seconds: float) -> None:
    print(f"\n## one process against --workers 2 (SQLite file): N viewers of one registered stream, over {seconds:g} s")
    print("| server | N | viewers per node | server CPU % (all processes) | slowest viewer % of rate | "
          "msgs/s per viewer | live |")
    print("|---|---|---|---|---|---|---|")
    knees: dict[str, int] = {}
    for layout, extra in (("one process", []), ("--workers 2", ["--workers", "2"])):
        folder = tempfile.mkdtemp(prefix="bench-workers-")
        server_env = {**env, "DATABASE_URL": f"sqlite:///{folder}/s.db", "LINGER": "5"}
        async with trio.open_nursery() as nursery:
            server = await spawn(nursery, [str(BIN / "rtsp-viewer"), "serve", "--port", "0", *extra], server_env)
            base = (await server.url()).split()[0]
            await trio.sleep(2)  # the workers are up
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                stream = (await http.post("/api/streams/", json={"name": "cam", "url": camera_url})).json()["id"]
            host, port = base.removeprefix("http://").split(":")
            for n in counts:
                load = await LoadClient.start(host, int(port), f"/ws/stream?id={stream}", n, start=True)
                try:
                    await trio.sleep(3)
                    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                        split = "/".join(str(row["viewers"]) for row in (await http.get("/api/cluster/")).json()["nodes"]
                                         if row["alive"])
                    cpu0, stats0, wall0 = tree_cpu(server.process.pid), await load.stats(), trio.current_time()
                    await trio.sleep(seconds)
                    wall = trio.current_time() - wall0
                    used, after = tree_cpu(server.process.pid) - cpu0, await load.stats()
                finally:
                    await load.aclose()
                got = [b - a for a, b in zip(stats0.bytes, after.bytes, strict=True)]
                slowest, messages = 100 * min(got) / max(got), (after.messages - stats0.messages) / n / wall
                live = slowest >= 99 and messages >= LIVE_MESSAGES
                if live:
                    knees[layout] = n
                print(f"| {layout} | {n} | {split} | {100 * used / wall:.1f} | {slowest:.1f} | {messages:.1f} | "
                      f"{'yes' if live else 'no'} |")
                await trio.sleep(2)
            server.process.terminate()
            await server.process.wait()
            nursery.cancel_scope.cancel()
    print("\nmost viewers served live: " + ", ".join(f"{k} {knees.get(k, 0)}" for k in ("one process", "--workers 2")))


async def bench_failover(env: dict[str, str], camera_url: str, rounds: int) -> None:
    print(f"\n## failover: seconds from the owner's end until every viewer on the other nodes plays again "
          f"(LEASE_SECONDS 2, FFMPEG_TIMEOUT 4; {rounds} rounds each)")
    async with nodes_on_postgres(env) as (_, database_url, nodes), trio.open_nursery() as nursery:
        node_env = {**env, "DATABASE_URL": database_url, "SECRET_KEY": SECRET, "LEASE_SECONDS": "2",
                    "FFMPEG_TIMEOUT": "4"}
        live = {await node.url(): node for node in nodes}
        async with httpx.AsyncClient(base_url=next(iter(live)), timeout=10) as http:
            stream = (await http.post("/api/streams/", json={"name": "cam", "url": camera_url})).json()["id"]
        await change_reaches_every_node(list(live), stream, rounds)
        times: dict[str, list[float]] = {"kill -9": [], "SIGSTOP": []}
        for kind in times:
            for _ in range(rounds):
                urls = list(live)
                async with AsyncExitStack() as stack:
                    viewers = {}
                    first = await stack.enter_async_context(open_viewer(urls[0].replace("http", "ws", 1)
                                                                        + f"/ws/stream?id={stream}"))
                    await first.play(within=30)
                    owner = await owner_of(urls[0], stream)
                    for url in urls:
                        if url != owner:
                            viewers[url] = await stack.enter_async_context(
                                open_viewer(url.replace("http", "ws", 1) + f"/ws/stream?id={stream}"))
                            await viewers[url].play(within=30)
                    victim = live[owner]
                    started = trio.current_time()
                    os.kill(victim.process.pid, signal.SIGKILL if kind == "kill -9" else signal.SIGSTOP)
                    for viewer in viewers.values():
                        await viewer.status("connecting", within=30)
                        await viewer.status("playing", within=60)
                    times[kind].append(trio.current_time() - started)
                if kind == "SIGSTOP":
                    frozen = victim.process.pid
                    os.kill(frozen, signal.SIGCONT)
                    await wait_for(partial(dropped, frozen), within=20)  # it dropped its camera session
                else:
                    await victim.process.wait()
                    del live[owner]
                    host = owner.removeprefix("http://").split(":")[0]
                    again = await spawn(nursery, [str(BIN / "rtsp-viewer"), "serve", "--host", host, "--port", "0"],
                                        node_env)
                    live[await again.url()] = again
                await trio.sleep(3)  # the cluster settles (the restarted node's heartbeat)
        for kind, seconds in times.items():
            print(f"- {kind}: median {statistics.median(seconds):.1f} s (min {min(seconds):.1f}, "
                  f"max {max(seconds):.1f}; each {', '.join(f'{s:.1f}' for s in seconds)})")
        for node in live.values():
            node.process.terminate()
        nursery.cancel_scope.cancel()
