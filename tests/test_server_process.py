"""The server as operators run it: `rtsp-viewer serve`, `hypercorn -c deploy/hypercorn.toml`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import sys
from functools import partial
from pathlib import Path

import httpx
import hypercorn.trio
import pytest
import trio
import trio.testing
import trio_websocket
import trustme
from hypercorn.config import Config

from app import process
from app.cli.main import serve
from app.factory import create_app
from app.process import EXIT_FORCED
from app.settings import Settings
from app.sockets.wire import SEND_BUFFER
from tests.camera import Camera
from tests.helpers import BIN, ROOT, Process, Server, env, ffmpeg_children, process_gone, spawn, wait_for


def descendants(pid: int) -> list[int]:
    """Every process under `pid` (a Hypercorn worker's FFmpeg is its grandchild)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


SERVING = {
    "rtsp-viewer serve": lambda: [str(BIN / "rtsp-viewer"), "serve", "--port", "0"],
    "hypercorn -c deploy/hypercorn.toml": lambda: hypercorn_argv(),  # workers = 1: a parent and a worker
    "hypercorn -c deploy/hypercorn.toml --workers 0": lambda: hypercorn_argv("--workers", "0"),  # one process
    # as a script's background job (`hypercorn ... &`) starts it: SIGINT ignored, so no Ctrl+C path
    "the same, with SIGINT ignored": lambda: ["sh", "-c", "trap '' INT; exec \"$@\"", "sh",
                                              *hypercorn_argv("--workers", "0")],
}


@pytest.mark.own_camera
@pytest.mark.parametrize("how", SERVING)
async def test_sigterm_stops_viewers_ends_ffmpeg_and_exits_within_5s(
        how: str, camera: Camera, nursery: trio.Nursery, tmp_path: Path) -> None:
    """However the app is served: SIGTERM gives every viewer `stopped` and a 1001 close,
    ends FFmpeg, and the server exits with 0 within 5 s (plain Hypercorn closed sockets
    with 1006 and no `stopped`)."""
    server = await spawn(nursery, SERVING[how](), env(tmp_path))
    try:
        remote = Server(await server.url(), settings=None)  # type: ignore[arg-type]
        async with remote.viewer(f"url={camera.url()}") as a, remote.viewer(f"url={camera.url('live')}") as b:
            await a.play()
            await b.play()
            workers = [pid for pid in descendants(server.process.pid)  # Hypercorn's (not multiprocessing's tracker)
                       if b"spawn_main" in await trio.Path(f"/proc/{pid}/cmdline").read_bytes()]
            ffmpegs = [p for q in [server.process.pid, *workers] for p in ffmpeg_children(q)]
            assert len(ffmpegs) == 1, ffmpegs
            start = trio.current_time()
            server.process.send_signal(signal.SIGTERM)
            for viewer in (a, b):
                await viewer.status("stopped", within=5)
                assert await viewer.closed(within=5) == 1001
            with trio.fail_after(5):
                await server.process.wait()
            assert trio.current_time() - start < 5
        assert server.process.returncode == 0, server.stderr
        assert all(process_gone(pid) for pid in ffmpegs + workers)
        assert camera.password not in server.stderr
    finally:
        if server.process.returncode is None:
            server.process.kill()
            with trio.CancelScope(shield=True):
                await server.process.wait()


async def test_every_client_socket_gets_its_send_buffer_and_user_timeout_under_plain_hypercorn(
        nursery: trio.Nursery) -> None:
    """The app sets SO_SNDBUF and TCP_USER_TIMEOUT on each client connection it serves, so
    Hypercorn with its own stock Config (no `rtsp-viewer serve`) gives them too: on the
    socket's and on an HTTP request's connection (read_timeout 25 s: 25000 ms)."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.read_timeout = 25
    app = create_app(Settings(port=0, database_url="sqlite:///:memory:"))  # type: ignore[call-arg]
    binds = await nursery.start(partial(hypercorn.trio.serve, app, config))  # type: ignore[arg-type]
    port = int(binds[0].rsplit(":", 1)[1])
    async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/ws/stream?url=rtsp://127.0.0.1:9/x") as ws:
        assert '"connected"' in await ws.get_message()
        local = ws._stream.socket.getsockname()[1]
        assert server_socket_options(port, local) == (2 * SEND_BUFFER, 25_000)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        assert (await http.get("/api/health/")).status_code == 200
        [peer] = [p for p in client_ports(port) if p != local]
        assert server_socket_options(port, peer) == (2 * SEND_BUFFER, 25_000)
    nursery.cancel_scope.cancel()


def client_ports(port: int) -> list[int]:
    """Peer ports of this process's sockets accepted on `port`."""
    return list(_accepted(port))


def server_socket_options(port: int, peer: int) -> tuple[int, int]:
    """(SO_SNDBUF, TCP_USER_TIMEOUT) of this process's socket on `port` to the client at `peer`."""
    return _accepted(port)[peer]


def _accepted(port: int) -> dict[int, tuple[int, int]]:
    """{peer port: (SO_SNDBUF, TCP_USER_TIMEOUT)} of this process's sockets accepted on `port`."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            copy = os.dup(int(name))
        except OSError:  # gone meanwhile (the listing's own fd)
            continue
        try:
            sock = socket.socket(fileno=copy)
        except OSError:  # not a socket: the copy is ours to close
            os.close(copy)
            continue
        with sock:
            try:
                if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.getsockname()[1] == port:
                    found[sock.getpeername()[1]] = (sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                                                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT))
            except OSError:  # not a connected TCP socket
                pass
    return found


@pytest.mark.parametrize(("name", "value"), [
    ("FFMPEG_TIMEOUT", "abc"), ("FFMPEG_TIMEOUT", "0"), ("MAX_CONCURRENT_STREAMS", "-1"),
    ("MAX_STREAMS_PER_CLIENT", "1.5"), ("PORT", "70000"), ("LINGER", "-2"), ("LOG_LEVEL", "LOUD"),
    ("LOG_FORMAT", "xml"), ("DATABASE_URL", "postgres://x"),
    # out of bounds (issue 10), and settings this version does not implement
    ("FFMPEG_TIMEOUT", "1e-9"), ("FFMPEG_TIMEOUT", "1e300"), ("FFMPEG_TIMEOUT", "nan"), ("LINGER", "inf"),
    ("MAX_CONCURRENT_STREAMS", "9" * 30), ("PORT", "-1"), ("API_TOKEN", "short"),
    ("API_TOKEN", "has spaces in it, 1234567890"), ("SECRET_KEY", "x" * 15),
    ("CORS_ORIGINS", "evil"), ("ALLOWED_HOSTS", "http://x"), ("ALLOWED_SOURCES", "not a host!"),
    ("ALLOW_URL_STREAMS", "maybe"),
    ("CERTFILE", "/no/such/cert.pem"), ("KEYFILE", "/no/such/key.pem"),
    ("CERTFILE", str(ROOT / "README.md")),  # without KEYFILE
])
async def test_bad_setting_stops_startup_with_one_line_naming_it(tmp_path: Path, name: str, value: str) -> None:
    done = await trio.run_process([str(BIN / "rtsp-viewer"), "serve"], env=env(tmp_path, **{name: value}),
                                  capture_stderr=True, capture_stdout=True, check=False)
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 2
    assert len(lines) == 1 and name in lines[0], lines
    if name in ("API_TOKEN", "SECRET_KEY"):
        assert value not in lines[0]  # a secret is not printed, even a bad one


@pytest.mark.parametrize("args", [["--port", "70000"], ["--port", "x"], ["--host", "999.1.1.1", "--port", "0"],
                                  ["--port", "in use"]])
async def test_bad_address_stops_startup_with_one_line(tmp_path: Path, args: list[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if args[-1] == "in use":
            args = ["--port", str(taken.getsockname()[1])]
        done = await trio.run_process([str(BIN / "rtsp-viewer"), "serve", *args], env=env(tmp_path),
                                      capture_stderr=True, capture_stdout=True, check=False)
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("rtsp-viewer: ") and "Traceback" not in lines[0], lines


async def test_several_bad_settings_are_named_together(tmp_path: Path) -> None:
    done = await trio.run_process([str(BIN / "rtsp-viewer"), "serve"],
                                  env=env(tmp_path, PORT="x", LINGER="y"), capture_stderr=True, check=False)
    line = done.stderr.decode().strip()
    assert done.returncode == 2 and "PORT" in line and "LINGER" in line and "\n" not in line


async def test_hypercorn_with_deploy_config_serves_the_app(nursery: trio.Nursery, tmp_path: Path) -> None:
    hypercorn = shutil.which("hypercorn", path=str(BIN))
    assert hypercorn is not None
    server = await spawn(nursery, [hypercorn, "-k", "trio", "-c", str(ROOT / "deploy/hypercorn.toml"),
                                   "--bind", "127.0.0.1:0", "app.asgi:app"], env(tmp_path, LOG_FORMAT="json"))
    try:
        base = await server.url()
        async with httpx.AsyncClient(base_url=base) as http:
            health = await http.get("/api/health/")
            created = await http.post("/api/streams/", json={"name": "x", "url": "rtsp://u:pw0rd-x@h/"})
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert created.status_code == 201
    finally:
        server.process.send_signal(signal.SIGTERM)
        with trio.CancelScope(shield=True), trio.fail_after(10):
            await server.process.wait()
    assert "pw0rd-x" not in server.stderr


async def test_dev_mode_opens_cors_to_every_origin_and_logs_debug(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await spawn(nursery, [str(BIN / "rtsp-viewer"), "serve", "--port", "0", "--dev"], env(tmp_path))
    try:
        async with httpx.AsyncClient(base_url=await server.url()) as http:
            response = await http.get("/api/streams/", headers={"Origin": "http://localhost:5173"})
        assert response.headers["access-control-allow-origin"] == "*"
    finally:
        server.process.send_signal(signal.SIGTERM)
        with trio.CancelScope(shield=True), trio.fail_after(10):
            await server.process.wait()
    assert " DEBUG " in server.stderr, server.stderr


async def test_sigterm_exits_within_5s_even_with_a_client_that_stopped_reading(
        camera: Camera, nursery: trio.Nursery, tmp_path: Path) -> None:
    from tests.test_reliability import non_reading_client

    server = await spawn(nursery, [str(BIN / "rtsp-viewer"), "serve", "--port", "0"], env(tmp_path))
    try:
        base = await server.url()
        stuck = await non_reading_client(nursery, base, f"/ws/stream?url={camera.url()}")
        await stuck.send_message('{"action":"start"}')
        await wait_for(lambda: ffmpeg_children(server.process.pid), within=10)
        children = ffmpeg_children(server.process.pid)
        await trio.sleep(4)  # its window is closed by now: the server's writes to it are stuck
        start = trio.current_time()
        server.process.send_signal(signal.SIGTERM)
        with trio.fail_after(5.5):
            await server.process.wait()
        assert trio.current_time() - start < 5
        assert all(process_gone(pid) for pid in children)
        await stuck._stream.aclose()
    finally:
        if server.process.returncode is None:
            server.process.kill()
            with trio.CancelScope(shield=True):
                await server.process.wait()


FALLBACK_WARNING = "WebSocket media goes through the ASGI send path"


def hypercorn_argv(*extra: str) -> list[str]:
    hypercorn = shutil.which("hypercorn", path=str(BIN))
    assert hypercorn is not None
    return [hypercorn, "-k", "trio", "-c", str(ROOT / "deploy/hypercorn.toml"), "--bind", "127.0.0.1:0",
            *extra, "app.asgi:app"]


async def stop(server: Process) -> None:
    server.process.send_signal(signal.SIGTERM)
    with trio.CancelScope(shield=True), trio.fail_after(10):
        await server.process.wait()


@pytest.mark.parametrize("how", ["rtsp-viewer serve", "hypercorn -c deploy/hypercorn.toml"])
async def test_the_lean_send_path_attaches_as_operators_run_the_server(
        how: str, nursery: trio.Nursery, tmp_path: Path) -> None:
    """Media costs several times the CPU without the wire: the health says which path the
    sockets use, and here it must be the wire."""
    argv = [str(BIN / "rtsp-viewer"), "serve", "--port", "0"] if how.startswith("rtsp") else hypercorn_argv()
    server = await spawn(nursery, argv, env(tmp_path))
    try:
        remote = Server(await server.url(), settings=None)  # type: ignore[arg-type]
        async with remote.http() as http:
            assert (await http.get("/api/health/")).json()["send_path"] is None  # no socket yet
            async with remote.viewer("url=rtsp://127.0.0.1:9/none") as viewer:
                await viewer.status("connected")
                health = (await http.get("/api/health/")).json()
    finally:
        await stop(server)
    assert health["send_path"] == "wire" and "send_path_reason" not in health, health
    assert FALLBACK_WARNING not in server.stderr


async def test_without_the_wire_one_warning_says_why_and_the_health_shows_it(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    """TLS terminated in Hypercorn: frames must go through its SSLStream, so sockets use
    Quart's send. They still work; the operator is told once, and the health says so."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client_tls = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    server = await spawn(nursery, hypercorn_argv("--certfile", str(tmp_path / "server.pem"),
                                                 "--keyfile", str(tmp_path / "server.pem")), env(tmp_path))
    try:
        base = await server.url()
        assert base.startswith("https://")
        for _ in range(3):
            async with trio_websocket.open_websocket_url(
                    f"{base.replace('https', 'wss')}/ws/stream?url=rtsp://127.0.0.1:9/none",
                    ssl_context=client_tls) as ws:
                assert '"connected"' in await ws.get_message()
        async with httpx.AsyncClient(base_url=base, verify=client_tls) as http:
            health = (await http.get("/api/health/")).json()
    finally:
        await stop(server)
    assert health["send_path"] == "asgi" and "TLS" in health["send_path_reason"], health
    warnings = [line for line in server.stderr.splitlines() if FALLBACK_WARNING in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "TLS" in warnings[0], warnings


async def test_serve_runs_embedded_touching_no_signal_and_returns_on_its_trigger(
        camera: Camera, nursery: trio.Nursery) -> None:
    """`serve` is the server alone: no signal handler while it runs, and it shuts down
    (viewers get `stopped` and 1001, FFmpeg is reaped) when its trigger returns."""
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    settings = Settings(port=0, database_url="sqlite:///:memory:", linger=30)  # type: ignore[call-arg]
    stop, done = trio.Event(), trio.Event()

    async def run(*, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        await serve(settings, shutdown_trigger=stop.wait, task_status=task_status)
        done.set()

    binds = await nursery.start(run)
    remote = Server(binds[0], settings)
    async with remote.viewer(f"url={camera.url()}") as viewer:
        await viewer.play()
        children = ffmpeg_children()
        assert len(children) == 1
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
        stop.set()
        await viewer.status("stopped", within=5)
        assert await viewer.closed(within=5) == 1001
    with trio.fail_after(5):
        await done.wait()
    assert all(process_gone(pid) for pid in children)


async def test_a_forced_exit_exits_non_zero(monkeypatch: pytest.MonkeyPatch,
                                            autojump_clock: trio.testing.MockClock) -> None:
    """Connections that still hold the server EXIT_DEADLINE s after the signal: the process
    is ended anyway, and its status says it was not a clean shutdown."""
    statuses: list[int] = []
    monkeypatch.setattr(process.os, "_exit", statuses.append)
    monkeypatch.setattr(process.logging, "shutdown", lambda: None)
    app = create_app(Settings(port=0, database_url="sqlite:///:memory:"))  # type: ignore[call-arg]
    await app.extensions["rtsp"].shutdown._exit_if_stuck()
    assert statuses == [EXIT_FORCED] and EXIT_FORCED != 0


async def test_serve_raises_its_open_file_limit_to_the_hard_limit(nursery: trio.Nursery, tmp_path: Path) -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    script = (f"import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({low}, {hard})); "
              "from app.cli.main import main; sys.argv = ['rtsp-viewer', 'serve', '--port', '0']; main()")
    server = await spawn(nursery, [sys.executable, "-c", script], env(tmp_path))
    try:
        await server.url()
        limits = await trio.Path(f"/proc/{server.process.pid}/limits").read_text()
        line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
        assert line.split()[3] == str(hard), line
    finally:
        server.process.send_signal(signal.SIGTERM)
        with trio.CancelScope(shield=True), trio.fail_after(10):
            await server.process.wait()


async def test_a_spawned_server_ends_with_its_nursery_even_when_the_test_fails(tmp_path: Path) -> None:
    """A test that fails half-way (its nursery cancelled) leaves no server behind."""
    async with trio.open_nursery() as nursery:
        server = await spawn(nursery, [str(BIN / "rtsp-viewer"), "serve", "--port", "0"], env(tmp_path))
        await server.url()
        nursery.cancel_scope.cancel()  # as a failing assertion does to the test's nursery
    assert server.process.returncode is not None
