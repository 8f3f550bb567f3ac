"""A real RTSP camera for the tests and benchmarks (test equipment, not product code).

It serves live video encoded by the bundled FFmpeg from a synthetic source. FFmpeg
publishes to the camera itself (RTSP ANNOUNCE/RECORD over TCP), so FFmpeg does the RTP
packetization for any codec; the camera relays those RTP/RTCP packets to players over
TCP-interleaved channels or UDP, starting every player at the last keyframe like a
camera that answers PLAY with a fresh IDR.

Switches: Basic or Digest auth (401 on a wrong password), 404 on an unknown path,
``stall()`` (stop sending, keep sockets open), ``resume()``, ``drop()`` (close every
player socket). ``python -m tests.camera`` runs one from the command line; it prints
its URL and takes ``stall``/``resume``/``drop`` lines on stdin.

Cancellation: cancelling ``run`` closes every socket and ends every publisher FFmpeg
(run_process reaps it).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from functools import partial

import attrs
import trio

MAX_GOP_PACKETS = 20_000


def bundled_ffmpeg() -> str:
    if os.environ.get("FFMPEG_BIN"):
        return os.environ["FFMPEG_BIN"]
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


@attrs.frozen
class Feed:
    """What one camera path serves."""

    codec: str = "h264"  # h264 | h265
    size: str = "320x240"
    rate: int = 25
    gop: int = 25
    bitrate: str | None = None  # e.g. "2M"; None = encoder default (cheap)
    noise: bool = False  # fill the bitrate with noise, as a real scene would
    audio: bool = False

    def publisher_argv(self, ffmpeg: str, url: str) -> list[str]:
        src = f"testsrc2=size={self.size}:rate={self.rate}"
        if self.noise:
            src += ",noise=alls=60:allf=t+u"
        argv = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "fatal", "-re"]
        argv += ["-f", "lavfi", "-i", src]
        if self.audio:
            argv += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
        enc = "libx264" if self.codec == "h264" else "libx265"
        argv += ["-map", "0:v", "-c:v", enc, "-preset", "ultrafast", "-tune", "zerolatency"]
        argv += ["-g", str(self.gop), "-keyint_min", str(self.gop), "-pix_fmt", "yuv420p"]
        if self.codec == "h265":
            argv += ["-x265-params", "log-level=error"]
        if self.bitrate:
            argv += ["-b:v", self.bitrate, "-maxrate", self.bitrate, "-bufsize", self.bitrate]
        # parameter sets in-band before every keyframe, as IP cameras send them
        argv += ["-bsf:v", "dump_extra=freq=keyframe"]
        if self.audio:
            argv += ["-map", "1:a", "-c:a", "aac", "-b:a", "64k"]
        argv += ["-f", "rtsp", "-rtsp_transport", "tcp", url]
        return argv


def camera_url(port: int, path: str, user: str, password: str | None) -> str:
    """A test camera's URL: with `user:password@` when a password is given."""
    cred = "" if password is None else f"{user}:{password}@"
    return f"rtsp://{cred}127.0.0.1:{port}/{path}"


class CameraProcess:
    """A camera (`python -m tests.camera`) in a process of its own, started once per test
    session and shared by the tests that only watch it (conftest's `camera` and
    `camera_640`). Ended by its own handle: closing its stdin ends it (`close`)."""

    def __init__(self, feed: Feed, *, user: str = "admin") -> None:
        argv = [sys.executable, "-m", "tests.camera", "--size", feed.size, "--rate", str(feed.rate),
                "--gop", str(feed.gop), "--codec", feed.codec, *(["--bitrate", feed.bitrate] if feed.bitrate else [])]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.user = user
        self._process = subprocess.Popen(argv, cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline()  # its URL, once its feed is live (it gives itself 20 s)
        if not line:
            self.close()
            raise RuntimeError(f"the shared camera did not start: {argv}")
        self.port = int(line.strip().rsplit(":", 1)[1].split("/", 1)[0])

    def url(self, path: str = "live", *, password: str | None = None, user: str | None = None) -> str:
        return camera_url(self.port, path, user or self.user, password)

    def close(self) -> None:
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                pipe.close()
        for stop in (None, self._process.terminate, self._process.kill):
            if stop is not None:
                stop()
            try:
                self._process.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                continue


def is_keyframe_start(codec: str, payload: bytes) -> bool:
    """Does this RTP payload begin a keyframe NAL (IDR/IRAP, or SPS before one)?"""
    if not payload:
        return False
    if codec == "h264":
        kind = payload[0] & 0x1F
        if kind == 24 and len(payload) > 3:  # STAP-A: first aggregated NAL
            kind = payload[3] & 0x1F
        elif kind == 28 and len(payload) > 1:  # FU-A start fragment
            return bool(payload[1] & 0x80) and payload[1] & 0x1F == 5
        return kind in (5, 7)
    kind = (payload[0] >> 1) & 0x3F
    if kind == 48 and len(payload) > 4:  # aggregation packet
        kind = (payload[4] >> 1) & 0x3F
    elif kind == 49 and len(payload) > 2:  # fragmentation unit start
        return bool(payload[2] & 0x80) and 16 <= payload[2] & 0x3F <= 21
    return 16 <= kind <= 21 or kind == 32


@attrs.define(eq=False)
class Player:
    """One PLAY session: where each track goes and a bounded outbox."""

    channels: dict[int, int]  # track -> interleaved RTP channel (RTCP is +1)
    udp: dict[int, tuple[str, int]] | None
    send: trio.MemorySendChannel[tuple[int, bool, bytes]]
    synced: bool = False


@attrs.define
class Path:
    feed: Feed
    burst: bool = True  # a new player gets the last GOP at once; False: waits for the next keyframe
    sdp: str = ""
    video_track: int = 0
    codec: str = "h264"
    ready: trio.Event = attrs.Factory(trio.Event)
    gop: list[tuple[int, bool, bytes]] = attrs.Factory(list)
    reports: dict[int, tuple[int, bool, bytes]] = attrs.Factory(dict)  # last RTCP per track
    players: set[Player] = attrs.Factory(set)
    most_players: int = 0  # the most sessions playing this path at once

    def on_packet(self, track: int, rtcp: bool, data: bytes, live: bool) -> None:
        item = (track, rtcp, data)
        if rtcp:
            self.reports[track] = item
        key = False
        if not rtcp and track == self.video_track and len(data) > 12:
            key = is_keyframe_start(self.codec, rtp_payload(data))
            if key and (not self.gop or self.gop[-1][2][4:8] != data[4:8]):
                self.gop = []  # new keyframe access unit
        if key or self.gop:
            if len(self.gop) < MAX_GOP_PACKETS:
                self.gop.append(item)
        if not live:
            return
        for player in list(self.players):
            if not player.synced:
                if not self.gop or (not self.burst and not key):
                    continue
                player.synced = True
                items = [*self.reports.values(), *(self.gop if self.burst else [item])]
            else:
                items = [item]
            for it in items:
                try:
                    player.send.send_nowait(it)
                except trio.WouldBlock:
                    player.synced = False  # too slow: restart it at the next keyframe
                    break
                except trio.BrokenResourceError:
                    self.players.discard(player)
                    break


def rtp_payload(packet: bytes) -> bytes:
    cc = packet[0] & 0x0F
    offset = 12 + 4 * cc
    if packet[0] & 0x10 and len(packet) >= offset + 4:
        offset += 4 + 4 * int.from_bytes(packet[offset + 2 : offset + 4], "big")
    return packet[offset:]


class RtspReader:
    """Reads RTSP requests and `$`-interleaved frames from one stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError
        self.buf += data

    async def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def next(self) -> tuple[str, object]:
        while not self.buf:
            await self._fill()
        if self.buf[0] == 0x24:  # '$'
            head = await self._exactly(4)
            return "frame", (head[1], await self._exactly(int.from_bytes(head[2:4], "big")))
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise EOFError
            await self._fill()
        end = self.buf.index(b"\r\n\r\n") + 4
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[:end]
        lines = head.split("\r\n")
        method, uri = [*lines[0].split(" "), "", ""][:2]
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = await self._exactly(int(headers.get("content-length", "0") or 0))
        return "request", (method, uri, headers, body)


@attrs.define(eq=False)
class Camera:
    """An RTSP server on 127.0.0.1 with live synthetic feeds (see module docstring)."""

    feeds: dict[str, Feed] = attrs.Factory(lambda: {"live": Feed()})
    port: int = 0
    auth: str | None = None  # None | "basic" | "digest"
    user: str = "admin"
    password: str = "secret"
    ffmpeg: str = attrs.Factory(bundled_ffmpeg)
    stalled: bool = False
    burst: bool = True  # see Path.burst
    realm: str = "TestCamera"
    paths: dict[str, Path] = attrs.Factory(dict)
    describes: int = 0  # authorized DESCRIBEs from players: how many sessions were opened
    redirects: dict[str, str] = attrs.Factory(dict)  # path -> Location: DESCRIBE answers 302 there
    _connections: set[trio.SocketStream] = attrs.Factory(set)
    _player_scopes: set[trio.CancelScope] = attrs.Factory(set)
    _nonce: str = attrs.Factory(lambda: secrets.token_hex(8))
    _scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    _publish_token: str = attrs.Factory(lambda: secrets.token_hex(8))

    def url(self, path: str = "live", *, password: str | None = None, user: str | None = None) -> str:
        if self.auth and password is None:
            password = self.password
        return camera_url(self.port, path, user or self.user, password)

    def stall(self) -> None:
        self.stalled = True

    def resume(self) -> None:
        self.stalled = False
        for path in self.paths.values():
            for player in path.players:
                player.synced = False

    def drop(self) -> None:
        for scope in list(self._player_scopes):
            scope.cancel()

    def close(self) -> None:
        """Power off: every socket closes, the encoder stops (run returns)."""
        self._scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with self._scope:
            await self._run(task_status)

    async def _run(self, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.serve_listeners, self._handle, listeners))
            for name, feed in self.feeds.items():
                self.paths[name] = Path(feed=feed, codec=feed.codec, burst=self.burst)
                url = f"rtsp://127.0.0.1:{self.port}/{name}?publish={self._publish_token}"
                nursery.start_soon(self._publish, feed.publisher_argv(self.ffmpeg, url))
            with trio.fail_after(20):
                for path in self.paths.values():
                    await path.ready.wait()
            task_status.started(self.port)

    async def _publish(self, argv: list[str]) -> None:
        while True:  # a camera's encoder keeps running
            await trio.run_process(argv, stdin=subprocess.DEVNULL, check=False)
            await trio.sleep(0.2)

    # --- RTSP ---------------------------------------------------------------------------

    def _authorized(self, method: str, headers: dict[str, str]) -> bool:
        if self.auth is None:
            return True
        given = headers.get("authorization", "")
        if self.auth == "basic" and given.startswith("Basic "):
            try:
                decoded = base64.b64decode(given[6:]).decode()
            except ValueError:
                return False
            return decoded == f"{self.user}:{self.password}"
        if self.auth == "digest" and given.startswith("Digest "):
            fields = dict(re.findall(r'(\w+)="?([^",]*)"?', given[7:]))
            ha1 = _md5(f"{self.user}:{self.realm}:{self.password}")
            ha2 = _md5(f"{method}:{fields.get('uri', '')}")
            expected = _md5(f"{ha1}:{self._nonce}:{ha2}")
            return fields.get("username") == self.user and fields.get("response") == expected
        return False

    def _challenge(self) -> str:
        if self.auth == "digest":
            return f'Digest realm="{self.realm}", nonce="{self._nonce}"'
        return f'Basic realm="{self.realm}"'

    async def _handle(self, stream: trio.SocketStream) -> None:
        self._connections.add(stream)
        try:
            with trio.CancelScope() as scope:
                self._player_scopes.add(scope)
                await self._serve(stream)
        except* (EOFError, OSError, trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
            pass  # a client went away or spoke nonsense: end its connection only
        finally:
            self._player_scopes.discard(scope)
            self._connections.discard(stream)
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _serve(self, stream: trio.SocketStream) -> None:
        reader = RtspReader(stream)
        session = secrets.token_hex(6)
        tracks: dict[int, int] = {}  # track -> interleaved channel
        udp_ports: dict[int, tuple[str, int]] = {}
        publishing: Path | None = None
        channel_track: dict[int, int] = {}
        send_lock = trio.Lock()

        async def reply(cseq: str, status: str = "200 OK", headers: dict[str, str] | None = None,
                        body: bytes = b"") -> None:
            lines = [f"RTSP/1.0 {status}", f"CSeq: {cseq}", "Server: tests.camera"]
            for k, v in (headers or {}).items():
                lines.append(f"{k}: {v}")
            if body:
                lines.append(f"Content-Length: {len(body)}")
            async with send_lock:
                await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

        async with trio.open_nursery() as nursery:
            while True:
                kind, item = await reader.next()
                if kind == "frame":
                    ch, data = item  # type: ignore[misc]
                    if publishing is not None and ch in channel_track:
                        publishing.on_packet(channel_track[ch], ch % 2 == 1, data, not self.stalled)
                    continue
                method, uri, headers, body = item  # type: ignore[misc]
                cseq = headers.get("cseq", "0")
                name = uri.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
                name = name.split("/", 1)[0]
                is_publisher = f"publish={self._publish_token}" in uri
                if method == "OPTIONS":
                    await reply(cseq, headers={"Public": "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, "
                                                          "GET_PARAMETER, ANNOUNCE, RECORD"})
                    continue
                if not is_publisher and not self._authorized(method, headers):
                    await reply(cseq, "401 Unauthorized", {"WWW-Authenticate": self._challenge()})
                    continue
                if name in self.redirects and method == "DESCRIBE":
                    await reply(cseq, "302 Found", {"Location": self.redirects[name]})
                    continue
                path = self.paths.get(name)
                if path is None:
                    await reply(cseq, "404 Not Found")
                    continue
                if method == "ANNOUNCE" and is_publisher:
                    publishing = path
                    path.sdp = body.decode()
                    path.video_track = _video_track(path.sdp)
                    await reply(cseq)
                elif method == "DESCRIBE":
                    self.describes += 1
                    await path.ready.wait()
                    base = uri.split("?", 1)[0].rstrip("/") + "/"
                    await reply(cseq, headers={"Content-Base": base, "Content-Type": "application/sdp"},
                                body=path.sdp.encode())
                elif method == "SETUP":
                    m = re.search(r"streamid=(\d+)", uri)
                    track = int(m.group(1)) if m else 0
                    transport = headers.get("transport", "")
                    inter = re.search(r"interleaved=(\d+)", transport)
                    ports = re.search(r"client_port=(\d+)", transport)
                    if inter:
                        ch = int(inter.group(1))
                        tracks[track] = ch
                        channel_track[ch] = channel_track[ch + 1] = track
                        answer = f"RTP/AVP/TCP;unicast;interleaved={ch}-{ch + 1}"
                    elif ports and not is_publisher:
                        port = int(ports.group(1))
                        udp_ports[track] = ("127.0.0.1", port)
                        answer = f"RTP/AVP;unicast;client_port={port}-{port + 1};server_port=9-9"
                    else:
                        await reply(cseq, "461 Unsupported Transport")
                        continue
                    if is_publisher:
                        answer += ";mode=record"
                    await reply(cseq, headers={"Transport": answer, "Session": f"{session};timeout=60"})
                elif method == "RECORD" and publishing is not None:
                    await reply(cseq, headers={"Session": session})
                    path.ready.set()
                elif method == "PLAY":
                    await reply(cseq, headers={"Session": session, "Range": "npt=0.000-"})
                    send, recv = trio.open_memory_channel[tuple[int, bool, bytes]](4096)
                    player = Player(channels=tracks, udp=udp_ports or None, send=send)
                    path.players.add(player)
                    path.most_players = max(path.most_players, len(path.players))
                    nursery.start_soon(self._play, stream, send_lock, player, recv, path)
                elif method == "TEARDOWN":
                    await reply(cseq, headers={"Session": session})
                    return
                else:  # GET_PARAMETER keep-alives and anything else
                    await reply(cseq, headers={"Session": session})

    async def _play(self, stream: trio.SocketStream, lock: trio.Lock, player: Player,
                    recv: trio.MemoryReceiveChannel[tuple[int, bool, bytes]], path: Path) -> None:
        udp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) if player.udp else None
        try:
            async with recv:
                async for track, rtcp, data in recv:
                    if udp is not None and player.udp is not None:
                        host, port = player.udp.get(track, ("127.0.0.1", 9))
                        await udp.sendto(data, (host, port + int(rtcp)))
                        continue
                    if track not in player.channels:
                        continue
                    ch = player.channels[track] + int(rtcp)
                    async with lock:
                        await stream.send_all(b"$" + bytes([ch]) + len(data).to_bytes(2, "big") + data)
        finally:
            path.players.discard(player)
            if udp is not None:
                udp.close()


def _video_track(sdp: str) -> int:
    index = -1
    for line in sdp.splitlines():
        if line.startswith("m="):
            index += 1
            if line.startswith("m=video"):
                return index
    return 0


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


async def _main(argv: list[str], out: Callable[[str], None]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.camera")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--codec", default="h264")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--rate", type=int, default=25)
    parser.add_argument("--gop", type=int, default=50)
    parser.add_argument("--bitrate", default=None)
    parser.add_argument("--noise", action="store_true")
    parser.add_argument("--audio", action="store_true")
    parser.add_argument("--auth", choices=["basic", "digest"], default=None)
    parser.add_argument("--no-burst", action="store_true", help="start players at the next keyframe")
    args = parser.parse_args(argv)
    feed = Feed(codec=args.codec, size=args.size, rate=args.rate, gop=args.gop,
                bitrate=args.bitrate, noise=args.noise, audio=args.audio)
    camera = Camera(feeds={"live": feed}, port=args.port, auth=args.auth, burst=not args.no_burst)
    async with trio.open_nursery() as nursery:
        await nursery.start(camera.run)
        out(camera.url())
        stdin = trio.lowlevel.FdStream(os.dup(0))
        async for line in _lines(stdin):
            cmd = line.strip()
            if cmd in ("stall", "resume", "drop"):
                getattr(camera, cmd)()
        nursery.cancel_scope.cancel()


async def _lines(stream: trio.abc.ReceiveStream):  # type: ignore[no-untyped-def]
    buf = b""
    while True:
        data = await stream.receive_some(4096)
        if not data:
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode()


if __name__ == "__main__":
    trio.run(_main, sys.argv[1:], lambda s: print(s, flush=True))
