"""Scale-out (issue 23) through the real path: PostgreSQL, three node processes on
127.0.0.2-4, HAProxy with deploy/haproxy.cfg in front, and the test camera counting its
sessions. Leases of 2 s and FFMPEG_TIMEOUT of 4 s (tests/cluster.py)."""

from __future__ import annotations

import os
import re
import signal
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import trio

from tests.camera import Camera, bundled_ffmpeg
from tests.cluster import SECRET, TOKEN, Cluster, Node, cluster, haproxy_available
from tests.helpers import (
    ROOT,
    Viewer,
    children,
    env,
    ffmpeg_children,
    open_viewer,
    process_gone,
    spawn,
    wait_for,
)
from tests.nginx import free_port, run_nginx
from tests.postgres import Postgres

pytestmark = [pytest.mark.own_camera, pytest.mark.slow,
              pytest.mark.skipif(not haproxy_available(), reason="haproxy is not installed (scripts/test installs it)")]


async def watch(stack: AsyncExitStack, nodes: list[Node], query: str) -> list[Viewer]:
    """A playing viewer of `query` on each node."""
    viewers = [await stack.enter_async_context(open_viewer(node.ws(query))) for node in nodes]
    for viewer in viewers:
        await viewer.send("start")
    for viewer in viewers:
        await viewer.status("playing", within=20)
    return viewers


def other_node(c: Cluster, *not_these: Node) -> Node:
    return next(node for node in c.nodes if node not in not_these)


async def owner_and_edges(c: Cluster, stack: AsyncExitStack,
                          camera: Camera) -> tuple[int, Node, list[Node], list[Viewer]]:
    """A stream played on the first node; its owner, and a playing viewer on each other node."""
    stream = await c.create(camera.url())
    await watch(stack, c.nodes[:1], f"id={stream}")
    owner = await c.owner(stream)
    others = [node for node in c.nodes if node is not owner]
    return stream, owner, others, await watch(stack, others, f"id={stream}")


async def media_flows(viewer: Viewer, more: int = 20_000) -> None:
    """The viewer receives `more` bytes of media from now on."""
    start = sum(map(len, viewer.media))
    await wait_for(lambda: sum(map(len, viewer.media)) >= start + more, within=15)


async def test_one_camera_session_serves_every_node_and_changes_reach_the_owner(
        nursery: trio.Nursery, tmp_path: Path, camera: Camera, postgres_server: Postgres) -> None:
    async with cluster(nursery, tmp_path, postgres_server) as c, AsyncExitStack() as stack:
        stream = await c.create(camera.url())
        viewers = await watch(stack, c.nodes, f"id={stream}")
        fmp4 = await stack.enter_async_context(open_viewer(c.nodes[1].ws(f"id={stream}&format=fmp4")))
        front = await stack.enter_async_context(open_viewer(c.front.replace("http", "ws")
                                                            + f"/ws/stream?id={stream}&token={TOKEN}"))
        port = free_port()  # and behind deploy/nginx-cluster.conf
        site = (ROOT / "deploy" / "nginx-cluster.conf").read_text().replace("listen 8080;", f"listen 127.0.0.1:{port};")
        site = re.sub(r"(?m)^    server 10\.0\.0\.\d:8000 ", "", site)
        site = site.replace("upstream rtsp_nodes {\n", "upstream rtsp_nodes {\n" + "".join(
            f"    server {node.url.removeprefix('http://')} max_fails=1 fail_timeout=5s;\n" for node in c.nodes))
        site = re.sub(r"(?m)^max_fails=1 fail_timeout=5s;\n", "", site)
        await stack.enter_async_context(run_nginx(tmp_path / "nginx", site, port))
        behind = await stack.enter_async_context(open_viewer(f"ws://127.0.0.1:{port}/ws/stream?id={stream}&token={TOKEN}"))
        for viewer in (fmp4, front, behind):
            await viewer.send("start")
            await viewer.status("playing", within=20)
        for viewer in [*viewers, fmp4, front, behind]:
            await media_flows(viewer)
        owner = await c.owner(stream)
        edge = next(node for node in c.nodes if node is not owner)
        async with c.http(edge.url) as http:
            # a play token made on one node watches on another (one SECRET_KEY), here in a stock player
            made = await http.post(f"/api/streams/{stream}/play-token", json={})
            assert made.status_code == 201, made.text
            play = made.json()["token"]
        async with c.http(other_node(c, owner, edge).url) as http:  # stream.ts and a snapshot from a non-owner
            done = await trio.run_process(
                [bundled_ffmpeg(), "-hide_banner", "-v", "error", "-i",
                 f"{other_node(c, owner, edge).url}/api/streams/{stream}/stream.ts?token={play}",
                 "-t", "1", "-f", "framemd5", "-"], capture_stdout=True, capture_stderr=True, check=False)
            assert done.returncode == 0 and len([ln for ln in done.stdout.decode().splitlines()
                                                 if ln and not ln.startswith("#")]) >= 20, done.stderr
            snapshot = await http.get(f"/api/streams/{stream}/snapshot.jpg")
            assert snapshot.status_code == 200 and snapshot.content[:2] == b"\xff\xd8"
        assert camera.paths["live"].most_players == 1  # one camera session for the whole cluster

        nodes = await c.view(edge)
        assert sorted(row["url"] for row in nodes) == sorted(node.url for node in c.nodes)
        assert all(row["alive"] for row in nodes)
        assert [row["streams"] for row in nodes if row["streams"]] == [[stream]]

        # a camera's own error reaches the viewers of a node that does not hold it
        missing = await c.create(camera.url("nope"), name="missing")
        async with open_viewer(edge.ws(f"id={missing}")) as lost:
            await lost.send("start")
            await lost.error("NOT_FOUND", within=20)

        # a change on a node that does not hold the camera restarts it on the owner
        async with c.http(edge.url) as http:
            assert (await http.patch(f"/api/streams/{stream}/", json={"transport": "udp"})).status_code == 200
        for viewer in [*viewers, fmp4, front, behind]:
            await viewer.status("connecting", within=5)
            await viewer.status("playing", within=20)
        assert camera.paths["live"].most_players == 1

        # a delete on another node stops every viewer, everywhere
        async with c.http(other_node(c, owner, edge).url) as http:
            assert (await http.delete(f"/api/streams/{stream}/")).status_code == 204
        for viewer in [*viewers, fmp4, front, behind]:
            await viewer.error("NOT_FOUND", within=5)
        await wait_for(lambda: not camera.paths["live"].players, within=10)  # no viewer: no camera session


async def test_kill_9_of_the_owner_moves_the_camera_and_its_viewers_play_on(
        nursery: trio.Nursery, tmp_path: Path, camera: Camera, postgres_server: Postgres) -> None:
    async with cluster(nursery, tmp_path, postgres_server) as c, AsyncExitStack() as stack:
        stream, owner, others, viewers = await owner_and_edges(c, stack, camera)
        ffmpegs = ffmpeg_children(owner.pid)
        assert ffmpegs, "the owner runs the camera's FFmpeg"
        os.kill(owner.pid, signal.SIGKILL)
        for viewer in viewers:  # the same sockets: no reconnect
            await viewer.status("connecting", within=10)
            await viewer.status("playing", within=2 + 4 + 15)  # lease + FFMPEG_TIMEOUT, and slack for a busy machine
            await media_flows(viewer)
        await wait_for(lambda: all(process_gone(pid) for pid in ffmpegs), within=5)  # none outlives its node
        assert camera.paths["live"].most_players == 1
        assert (await c.owner(stream, among=others)) in others


async def test_a_frozen_owner_is_replaced_and_drops_its_session_when_it_wakes(
        nursery: trio.Nursery, tmp_path: Path, camera: Camera, postgres_server: Postgres) -> None:
    async with cluster(nursery, tmp_path, postgres_server) as c, AsyncExitStack() as stack:
        stream, owner, others, viewers = await owner_and_edges(c, stack, camera)
        os.kill(owner.pid, signal.SIGSTOP)
        try:
            for viewer in viewers:
                await viewer.status("connecting", within=10)
                await viewer.status("playing", within=25)
            taken = await c.owner(stream, among=others)
            assert taken in others
        finally:
            os.kill(owner.pid, signal.SIGCONT)
        # awake, it learns its epoch is stale and ends its camera session
        await wait_for(lambda: len(camera.paths["live"].players) == 1, within=10)
        for viewer in viewers:
            await media_flows(viewer)


async def test_viewers_play_through_a_database_restart_and_writes_come_back(
        nursery: trio.Nursery, tmp_path: Path, camera: Camera, postgres_server: Postgres) -> None:
    async with cluster(nursery, tmp_path, postgres_server) as c, AsyncExitStack() as stack:
        stream = await c.create(camera.url())
        viewers = await watch(stack, c.nodes, f"id={stream}")
        postgres_server.stop()
        try:
            async with c.http(c.nodes[1].url) as http:
                down = await http.post("/api/streams/", json={"name": "b", "url": camera.url()})
                assert down.status_code == 503 and down.json()["error"]["code"] == "STORAGE_UNAVAILABLE"
            for viewer in viewers:
                await media_flows(viewer)  # the database is down: media flows on
            await trio.sleep(3)  # longer than a lease: still playing
            for viewer in viewers:
                await media_flows(viewer)
        finally:
            await trio.to_thread.run_sync(postgres_server.start)
        async with c.http(c.nodes[2].url) as http:
            async def written() -> bool:
                answer = await http.post("/api/streams/", json={"name": "b", "url": camera.url()})
                return answer.status_code == 201
            with trio.fail_after(15):
                while not await written():  # noqa: ASYNC110 (the database comes back: try again)
                    await trio.sleep(0.2)
            names = [row["name"] for row in (await http.get("/api/streams/")).json()]
            assert names[0] == "cam" and "b" in names  # nothing lost
            # every node listens again (or read what it missed): a change reaches every viewer
            assert (await http.patch(f"/api/streams/{stream}/", json={"transport": "udp"})).status_code == 200
        for viewer in viewers:
            assert viewer.close_code is None
            await viewer.status("connecting", within=10)
            await viewer.status("playing", within=20)
            await media_flows(viewer)
        assert camera.paths["live"].most_players == 1


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_serve_workers_2_is_one_port_two_nodes_and_one_camera_session(
        nursery: trio.Nursery, tmp_path: Path, camera: Camera, database: str, request: pytest.FixtureRequest) -> None:
    """`rtsp-viewer serve --workers 2` on a SQLite file and on PostgreSQL: two nodes behind
    one port, one camera session for viewers on both, a change through the port reaches
    both (SQLite's nodes poll, PostgreSQL notifies), and SIGTERM ends everything within 5 s."""
    extra = {}
    if database == "postgresql":
        extra = {"DATABASE_URL": request.getfixturevalue("postgres_server").new_database(), "SECRET_KEY": SECRET}
    server = await spawn(nursery, [sys.executable, "-m", "app.cli.main", "serve", "--workers", "2", "--port", "0"],
                         env(tmp_path, LINGER="1", RATE_LIMIT="off", **extra))
    base = (await server.url()).split()[0]
    async with httpx.AsyncClient(base_url=base, timeout=10) as http, AsyncExitStack() as stack:
        async def two_alive() -> list[dict[str, object]]:
            with trio.fail_after(15):
                while True:
                    nodes = (await http.get("/api/cluster/")).json()["nodes"]
                    if len([n for n in nodes if n["alive"]]) == 2:
                        return list(nodes)
                    await trio.sleep(0.1)

        nodes = await two_alive()
        stream = (await http.post("/api/streams/", json={"name": "cam", "url": camera.url()})).json()["id"]
        urls = [str(n["url"]).replace("http", "ws", 1) + f"/ws/stream?id={stream}" for n in nodes]
        viewers = [await stack.enter_async_context(open_viewer(url)) for url in [*urls, base.replace("http", "ws", 1)
                                                                                + f"/ws/stream?id={stream}"]]
        for viewer in viewers:
            await viewer.send("start")
            await viewer.status("playing", within=20)
        assert camera.paths["live"].most_players == 1
        assert (await http.patch(f"/api/streams/{stream}/", json={"transport": "udp"})).status_code == 200
        for viewer in viewers:
            await viewer.status("connecting", within=5)
            await viewer.status("playing", within=20)
        assert camera.paths["live"].most_players == 1
        workers = children(server.process.pid)
        assert len(workers) == 2
    server.process.send_signal(signal.SIGTERM)
    with trio.fail_after(6):
        await server.process.wait()
    assert server.process.returncode == 0
    await wait_for(lambda: all(process_gone(pid) for pid in workers), within=2)
    assert not camera.paths["live"].players


@pytest.mark.parametrize("when", ["serving", "starting"])
async def test_the_workers_of_a_killed_parent_shut_down(nursery: trio.Nursery, tmp_path: Path, when: str) -> None:
    """kill -9 of `serve --workers 2` passes no signal on: its workers see their parent
    gone and shut down as on SIGTERM, within the parent check and the 5 s exit; also when
    the parent dies while they start (they compare with the pid it gave them)."""
    server = await spawn(nursery, [sys.executable, "-m", "app.cli.main", "serve", "--workers", "2", "--port", "0"],
                         env(tmp_path))
    await server.url()  # the parent's line: its workers are started
    if when == "serving":  # and each worker's
        await wait_for(lambda: server.stderr.count("rtsp-viewer: serving on") >= 3, within=15)
    workers = children(server.process.pid)
    assert len(workers) == 2
    server.process.kill()
    await server.process.wait()
    try:
        await wait_for(lambda: all(process_gone(pid) for pid in workers), within=8)
    except trio.TooSlowError:
        raise AssertionError(f"workers left: {[p for p in workers if not process_gone(p)]}\n{server.stderr}") from None
