"""Test helpers: a running server in-process, a WebSocket viewer, process and TS checks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
import trio_websocket

from app.cli.main import DEAD_AFTER, PING_INTERVAL, serve
from app.factory import create_app
from app.services import Services
from app.settings import Settings
from supervisors import Registry
from supervisors.media.mpegts import PACKET
from tests.camera import bundled_ffmpeg

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@attrs.define
class Server:
    base: str
    settings: Settings
    registry: Registry | None = None  # when it runs in this process
    services: Services | None = None  # likewise

    @property
    def ws_base(self) -> str:
        return "ws" + self.base.removeprefix("http")  # ws:// or wss://

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=10)

    async def create(self, url: str, name: str = "cam", **extra: object) -> int:
        async with self.http() as client:
            response = await client.post("/api/streams/", json={"name": name, "url": url, **extra})
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def viewer(self, query: str, **options: Any) -> AbstractAsyncContextManager[Viewer]:
        """A viewer of `/ws/stream?{query}` (see `open_viewer`)."""
        return open_viewer(f"{self.ws_base}/ws/stream?{query}", **options)


@asynccontextmanager
async def open_viewer(url: str, **options: Any) -> AsyncIterator[Viewer]:
    """A viewer that reads everything the server sends, as a browser does; `options` go to
    trio-websocket (ssl_context, extra_headers)."""
    async with trio_websocket.open_websocket_url(url, **options) as ws:
        viewer = Viewer(ws)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(viewer.pump)
                try:
                    yield viewer
                finally:
                    # close while still reading, so the close handshake can complete
                    with trio.move_on_after(5, shield=True):
                        await ws.aclose()
                    nursery.cancel_scope.cancel()
        finally:
            # trio-websocket 0.12 leaves its TCP stream open when the server closes
            # first (it waits for the server's FIN, then never closes its own end)
            with trio.CancelScope(shield=True):
                await ws._stream.aclose()


async def start_server(nursery: trio.Nursery, *, ping_interval: float = PING_INTERVAL, dead_after: int = DEAD_AFTER,
                       **overrides: object) -> Server:
    """The app under Hypercorn's trio worker in this process, on 127.0.0.1 port 0."""
    # RATE_LIMIT off: every test's clients share 127.0.0.1 (tests/test_security.py turns it on);
    # Argon2 at OWASP's minimum cost (0.03 s a hash, not 0.1 s): the default's tests say so
    values: dict[str, object] = {"port": 0, "database_url": "sqlite:///:memory:", "linger": 0.5, "rate_limit": (0.0, 0.0),
                                 "ffmpeg_timeout": 5.0, "password_hash": "owasp-minimum", **overrides}
    settings = Settings(**values)  # type: ignore[arg-type]
    app = create_app(settings)
    binds = await nursery.start(partial(serve, settings, app=app, ping_interval=ping_interval,
                                        dead_after=dead_after))
    return Server(binds[0], settings, app.extensions["rtsp"].registry, app.extensions["rtsp"])


@attrs.define
class Viewer:
    """A WebSocket client that keeps everything it received, in order."""

    ws: trio_websocket.WebSocketConnection
    texts: list[dict[str, object]] = attrs.Factory(list)
    media: list[bytes] = attrs.Factory(list)
    log: list[object] = attrs.Factory(list)  # every message: dicts and bytes, in order
    close_code: int | None = None
    _arrived: trio.Event = attrs.Factory(trio.Event)
    _read: int = 0  # how far `expect` has looked through texts

    async def pump(self) -> None:
        try:
            while True:
                message = await self.ws.get_message()
                if isinstance(message, bytes):
                    self.media.append(message)
                else:
                    message = json.loads(message)
                    self.texts.append(message)
                self.log.append(message)
                self._wake()
        except trio_websocket.ConnectionClosed as closed:
            self.close_code = closed.reason.code
            self._wake()

    def _wake(self) -> None:
        self._arrived.set()
        self._arrived = trio.Event()

    async def send(self, action: str) -> None:
        await self.ws.send_message(json.dumps({"action": action}))

    async def expect(self, *wanted: dict[str, object], within: float = 15) -> dict[str, object]:
        """The next text message (after the last one expected) with all the given items."""
        with trio.fail_after(within):
            while True:
                while self._read < len(self.texts):
                    message = self.texts[self._read]
                    self._read += 1
                    if any(w.items() <= message.items() for w in wanted):
                        return message
                if self.close_code is not None:
                    raise AssertionError(f"closed {self.close_code} before {wanted}: {self.texts}")
                await self._arrived.wait()

    async def status(self, phase: str, within: float = 15) -> None:
        await self.expect({"type": "status", "phase": phase}, within=within)

    async def error(self, code: str, within: float = 15) -> dict[str, object]:
        return await self.expect({"type": "error", "code": code}, within=within)

    async def closed(self, within: float = 15) -> int:
        with trio.fail_after(within):
            while self.close_code is None:
                await self._arrived.wait()
        return self.close_code

    async def collect(self, seconds: float) -> bytes:
        """Media bytes received in the next `seconds`."""
        start = len(self.media)
        await trio.sleep(seconds)
        return b"".join(self.media[start:])

    async def play(self, within: float = 15) -> None:
        await self.send("start")
        await self.status("playing", within=within)

    async def reconnect(self) -> None:
        """`reconnect`, until the upstream plays again (`connecting`, then `playing`)."""
        await self.send("reconnect")
        await self.status("connecting")
        await self.status("playing")


def server_log(caplog: Any) -> str:
    """The captured log as the server writes it: each record through the server's own
    formatters, text and JSON (not pytest's), without the test clients' loggers."""
    from app.logs import JsonFormatter, MaskingFormatter

    formatters = (MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"), JsonFormatter())
    return "\n".join(formatter.format(record) for record in caplog.records
                     if not record.name.startswith(("trio-websocket", "httpx", "httpcore"))
                     for formatter in formatters)


def queued_items(viewer: Any) -> list[object]:
    """Everything an engine viewer's writer would send now, as `next` gives it."""
    items = []
    while True:
        try:
            items.append(viewer.next_nowait())
        except trio.WouldBlock:
            return items


def ffmpeg_children(pid: int | None = None) -> list[int]:
    """PIDs of the service's FFmpeg processes reading a camera into pipe:1 under pid (not
    the fMP4 remuxers, which read pipe:0)."""
    pid = os.getpid() if pid is None else pid
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        state = stat.rsplit(")", 1)[1].split()[0]
        if ppid == pid and state != "Z" and b"pipe:1" in argv and b"mpegts" in argv and b"pipe:0" not in argv:
            found.append(int(entry.name))
    return found


async def wait_for(predicate, within: float = 10, step: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    """Poll a condition nobody can signal (the process table) until it holds."""
    with trio.fail_after(within):
        while True:
            if predicate():
                return
            await trio.sleep(step)


def children(pid: int) -> list[int]:
    """The PIDs of a process's children (any program)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def process_gone(pid: int) -> bool:
    """No such process, or only a zombie left for its (dead) parent to reap."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def ts_packets(data: bytes) -> list[bytes]:
    assert len(data) % PACKET == 0
    return [data[i : i + PACKET] for i in range(0, len(data), PACKET)]


def whole_frames(data: bytes, packets: int, pid: int = 0x100) -> bytes:
    """The first `packets` packets of MPEG-TS, cut back to the last PES start on `pid`
    within them: a decoder then sees only whole frames (a frame cut in its middle is a
    decode error of the cut, not of the stream)."""
    head = data[: packets * PACKET]
    starts = [i for i in range(0, len(head), PACKET)
              if head[i + 1] & 0x40 and ((head[i + 1] & 0x1F) << 8 | head[i + 2]) == pid]
    return head[: starts[-1]] if len(starts) > 1 else head


def pids_in_order(data: bytes) -> list[int]:
    return [((p[1] & 0x1F) << 8) | p[2] for p in ts_packets(data)]


def probe(data: bytes, streams: str = "0") -> tuple[str, str]:
    """(video stream description, decode errors of `streams`) of MPEG-TS bytes, by the
    bundled FFmpeg."""
    with tempfile.NamedTemporaryFile(suffix=".ts") as f:
        f.write(data)
        f.flush()
        info = subprocess.run([bundled_ffmpeg(), "-hide_banner", "-i", f.name], capture_output=True,
                              text=True, check=False).stderr
        decode = subprocess.run([bundled_ffmpeg(), "-hide_banner", "-v", "error", "-i", f.name, "-map", streams,
                                 "-f", "null", "-"], capture_output=True, text=True, check=False)
    video = next((ln.strip() for ln in info.splitlines() if "Video:" in ln), "")
    return video, decode.stderr.strip()


class Process:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stderr = ""

    async def read_stderr(self) -> None:
        """Keep its stderr until it ends; cancelled (the test is over, or failed), end the
        process: SIGTERM, then SIGKILL after 10 s, reaped either way."""
        assert self.process.stderr is not None
        try:
            async for chunk in self.process.stderr:
                self.stderr += chunk.decode(errors="replace")
        finally:
            if self.process.returncode is None:
                self.process.terminate()
                with trio.move_on_after(10, shield=True):
                    await self.process.wait()
                if self.process.returncode is None:
                    self.process.kill()
                    with trio.CancelScope(shield=True):
                        await self.process.wait()

    async def url(self) -> str:
        with trio.fail_after(20):
            while not (match := re.search(r'serving on (https?://[^\s"]+)|Running on (https?://[^\s"]+)', self.stderr)):
                if self.process.returncode is not None:
                    raise AssertionError(f"server exited: {self.stderr}")
                await trio.sleep(0.05)
        return match.group(1) or match.group(2)


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/s.db", "LINGER": "30", **extra}


async def spawn(nursery: trio.Nursery, argv: list[str], environ: dict[str, str]) -> Process:
    """Start a process whose stderr is kept; it ends when `nursery` does (see read_stderr)."""
    process = await trio.lowlevel.open_process(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                               stdout=subprocess.DEVNULL, env=environ, cwd=ROOT)
    handle = Process(process)
    nursery.start_soon(handle.read_stderr)
    return handle


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def timestamps(data: bytes, pid: int = 0x100) -> list[tuple[str, int]]:
    """("dts", t) of each video PES start (its PTS when it has no DTS) and ("pcr", t) of each
    PCR on `pid`, in the order received; 90 kHz."""
    found = []
    for packet in ts_packets(data):
        if ((packet[1] & 0x1F) << 8 | packet[2]) != pid:
            continue
        payload = 4
        if packet[3] & 0x20:  # adaptation field
            if packet[4] >= 7 and packet[5] & 0x10:  # PCR: 33-bit base
                b = packet[6:11]
                found.append(("pcr", b[0] << 25 | b[1] << 17 | b[2] << 9 | b[3] << 1 | b[4] >> 7))
            payload += 1 + packet[4]
        if packet[1] & 0x40 and packet[payload : payload + 3] == b"\x00\x00\x01" and packet[payload + 7] & 0x80:
            at = payload + (14 if packet[payload + 7] & 0x40 else 9)  # DTS if present, else PTS
            p = packet[at : at + 5]
            found.append(("dts", ((p[0] >> 1) & 7) << 30 | p[1] << 22 | (p[2] >> 1) << 15 | p[3] << 7 | p[4] >> 1))
    return found
