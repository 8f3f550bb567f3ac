"""A real nginx (Debian's nginx-light) for the tests, started and ended by its own handle.

`run_nginx` wraps an `http {}` block's contents (server blocks, or deploy/nginx.conf
itself) in a main configuration of its own: no daemon, everything under `folder`.
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

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
MAIN = """
daemon off;
{user}
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
  include {prefix}/site.conf;
}}
"""


def require_nginx() -> None:
    if not Path(NGINX).exists():
        if os.environ.get("CI"):
            pytest.fail("CI needs nginx (apt-get install nginx-light): ./scripts/test installs it as root")
        pytest.skip("no nginx: apt-get install nginx-light")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def run_nginx(folder: Path, site: str, port: int) -> AsyncIterator[None]:
    """nginx serving `site` (the contents of an http block) until the block ends; returns
    once it listens on 127.0.0.1:`port`."""
    require_nginx()
    await trio.Path(folder).mkdir(parents=True, exist_ok=True)
    await trio.Path(folder / "site.conf").write_text(site)
    conf = trio.Path(folder / "nginx.conf")
    await conf.write_text(MAIN.format(prefix=folder, user="user root;" if os.getuid() == 0 else ""))
    process = await trio.lowlevel.open_process([NGINX, "-p", str(folder), "-c", str(conf)])
    try:
        with trio.fail_after(10):
            while True:  # until nginx listens
                if process.returncode is not None:
                    raise AssertionError(f"nginx exited: {(folder / 'error.log').read_text()}")
                try:
                    await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                    break
                except OSError:
                    await trio.sleep(0.05)
        yield
    finally:
        process.terminate()  # SIGTERM: nginx's master ends its workers
        with trio.CancelScope(shield=True):
            await process.wait()
