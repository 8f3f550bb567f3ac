"""Behind a real nginx (Debian's nginx-light): TRUSTED_PROXIES makes the limits per client.

Clients reach nginx from their own loopback addresses (127.0.0.2, 127.0.0.3); nginx
reaches the app from 127.0.0.1 and appends the client's address to X-Forwarded-For.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from tests.helpers import Server, start_server

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SITE = """
daemon off;
{user}
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
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
}}
"""


def require_nginx() -> None:
    if not Path(NGINX).exists():
        if os.environ.get("CI"):
            pytest.fail("CI needs nginx (apt-get install nginx-light): ./scripts/test installs it as root")
        pytest.skip("no nginx: apt-get install nginx-light")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def nginx_in_front(server: Server, folder: Path) -> AsyncIterator[int]:
    """nginx proxying to the server; yields its port, ends it (by its own handle) after."""
    require_nginx()
    await trio.Path(folder).mkdir(parents=True, exist_ok=True)
    port = _free_port()
    conf = trio.Path(folder / "nginx.conf")
    await conf.write_text(SITE.format(prefix=folder, port=port, app=server.base.removeprefix("http://"),
                                      user="user root;" if os.getuid() == 0 else ""))
    process = await trio.lowlevel.open_process([NGINX, "-p", str(folder), "-c", str(conf)])
    try:
        with trio.fail_after(10):
            while True:  # until nginx listens
                try:
                    await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                    break
                except OSError:
                    await trio.sleep(0.05)
        yield port
    finally:
        process.terminate()  # SIGTERM: nginx's master ends its workers
        with trio.CancelScope(shield=True):
            await process.wait()


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
