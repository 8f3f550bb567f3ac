"""Behind a real nginx (Debian's nginx-light): TRUSTED_PROXIES makes the limits per client.

Clients reach nginx from their own loopback addresses (127.0.0.2, 127.0.0.3); nginx
reaches the app from 127.0.0.1 and appends the client's address to X-Forwarded-For.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from tests.helpers import Server, start_server
from tests.nginx import free_port, run_nginx

SITE = """
server {{
  listen 127.0.0.1:{port};
  location / {{
    proxy_pass http://{app};
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection "upgrade";
    proxy_buffering off;
  }}
}}
"""


@asynccontextmanager
async def nginx_in_front(server: Server, folder: Path) -> AsyncIterator[int]:
    """nginx proxying to the server; yields its port."""
    port = free_port()
    async with run_nginx(folder, SITE.format(port=port, app=server.base.removeprefix("http://")), port):
        yield port


async def get(port: int, source: str, path: str, extra: str = "") -> int:
    """GET through nginx from the loopback address `source`; the response's status."""
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    async with trio.SocketStream(sock) as stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n".encode())
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some():
                data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.mark.parametrize("trusted", [("127.0.0.1/32",), ()])
async def test_behind_nginx_limits_count_each_client_only_with_trusted_proxies(
        nursery: trio.Nursery, tmp_path: Path, trusted: tuple[str, ...]) -> None:
    server = await start_server(nursery, trusted_proxies=trusted, rate_limit=(0.2, 2.0))
    async with nginx_in_front(server, tmp_path / "nginx") as port:
        first = [await get(port, "127.0.0.2", "/api/streams/") for _ in range(3)]
        spoofed = await get(port, "127.0.0.2", "/api/streams/", "X-Forwarded-For: 198.51.100.1\r\n")
        other = await get(port, "127.0.0.3", "/api/streams/")
    assert first == [200, 200, 429] and spoofed == 429  # a client cannot pose as another
    if trusted:
        assert other == 200  # its own bucket: the address nginx saw
    else:
        assert other == 429  # without TRUSTED_PROXIES everyone is nginx: one bucket for all
