"""A real cluster for the tests: PostgreSQL, three node processes on 127.0.0.2-4 and
HAProxy (with `deploy/haproxy.cfg`) on 127.0.0.1, each ended by its own handle."""

from __future__ import annotations

import re
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import trio

from tests.helpers import ROOT, Process, env, spawn
from tests.postgres import Postgres

SECRET = "cluster-secret-key-0123456789"
TOKEN = "cluster-api-token-0123456789"  # every node guards its routes: the nodes' own reads show they pass
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def haproxy_available() -> bool:
    return shutil.which("haproxy") is not None


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@attrs.define
class Node:
    host: str
    process: Process
    url: str = ""

    @property
    def pid(self) -> int:
        return int(self.process.process.pid)

    def ws(self, query: str, token: str = TOKEN) -> str:
        return self.url.replace("http", "ws", 1) + f"/ws/stream?{query}&token={token}"


@attrs.define
class Cluster:
    database_url: str
    nodes: list[Node]
    front: str = ""  # HAProxy

    def http(self, url: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=url or self.front, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"})

    async def create(self, camera_url: str, name: str = "cam") -> int:
        async with self.http() as http:
            answer = await http.post("/api/streams/", json={"name": name, "url": camera_url})
            assert answer.status_code == 201, answer.text
            return int(answer.json()["id"])

    async def view(self, node: Node | None = None) -> list[dict[str, object]]:
        async with self.http(node.url if node else None) as http:
            return list((await http.get("/api/cluster/")).json()["nodes"])

    async def owner(self, stream_id: int, among: list[Node] | None = None) -> Node:
        """The node that holds the stream's camera, as the cluster says."""
        by_url = {node.url: node for node in self.nodes}
        for row in await self.view(among[0] if among else None):
            if stream_id in row["streams"] and row["alive"] and row["url"] in by_url:  # type: ignore[operator]
                return by_url[str(row["url"])]
        raise LookupError(f"no node holds stream {stream_id}")


def node_env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    return env(tmp_path, DATABASE_URL=database_url, SECRET_KEY=SECRET, API_TOKEN=TOKEN, LEASE_SECONDS="2",
               FFMPEG_TIMEOUT="4", LINGER="1", RATE_LIMIT="off", LOG_LEVEL="INFO", **extra)


async def start_node(nursery: trio.Nursery, tmp_path: Path, database_url: str, host: str) -> Node:
    process = await spawn(nursery, [sys.executable, "-m", "app.cli.main", "serve", "--host", host, "--port", "0"],
                          node_env(tmp_path, database_url))
    node = Node(host, process)
    node.url = await process.url()
    return node


def haproxy_config(tmp_path: Path, port: int, nodes: list[Node]) -> Path:
    """deploy/haproxy.cfg with this cluster's front port and nodes, and a check every
    0.5 s (the tests' short leases)."""
    text = (ROOT / "deploy" / "haproxy.cfg").read_text()
    text = re.sub(r"(?m)^    bind .*$", f"    bind 127.0.0.1:{port}", text)
    text = re.sub(r"(?m)^    server .*\n", "", text)
    text = text.replace("check inter 1s", "check inter 500ms")
    servers = "".join(f"    server node{i} {node.url.removeprefix('http://')}\n" for i, node in enumerate(nodes, 1))
    path = tmp_path / "haproxy.cfg"
    path.write_text(text.rstrip("\n") + "\n" + servers)
    return path


@asynccontextmanager
async def cluster(nursery: trio.Nursery, tmp_path: Path, postgres: Postgres) -> AsyncIterator[Cluster]:
    database_url = postgres.new_database()
    first = await start_node(nursery, tmp_path, database_url, HOSTS[0])
    nodes = [first]
    async with trio.open_nursery() as starting:
        async def start(host: str) -> None:
            nodes.append(await start_node(nursery, tmp_path, database_url, host))
        for host in HOSTS[1:]:
            starting.start_soon(start, host)
    nodes.sort(key=lambda node: node.host)
    found = Cluster(database_url, nodes)
    port = _free_port()
    config = haproxy_config(tmp_path, port, nodes)
    found.front = f"http://127.0.0.1:{port}"
    await spawn(nursery, ["haproxy", "-db", "-f", str(config)], env(tmp_path))
    with trio.fail_after(10):
        while True:
            try:
                async with found.http() as http:
                    if (await http.get("/api/health/")).status_code == 200:
                        break
            except httpx.HTTPError:
                pass
            await trio.sleep(0.1)
    try:
        yield found
    except BaseException:  # what each node said, for the failure's report
        for node in nodes:
            print(f"--- node {node.url} (pid {node.pid}):\n{node.process.stderr[-6000:]}")
        raise
