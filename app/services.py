"""What the routes share: settings, storage, the engine's registry, FFmpeg's identity.

Stored on the app (`app.extensions["rtsp"]`), created by the factory, opened and closed
with the app's serving lifetime.
"""

from __future__ import annotations

import subprocess
from contextlib import AbstractAsyncContextManager, nullcontext

import attrs
import trio
from quart import current_app

from supervisors import Registry
from supervisors.addresses import Network
from supervisors.events import describe_os_error
from supervisors.locks import KeyedLocks
from supervisors.snapshot import Snapshots

from .access import Access
from .clients import Connections, RateLimiter
from .counts import EdgeTally
from .origins import Policy
from .process import Shutdown
from .settings import Settings
from .store import Store
from .wire import SendPathRecord

PROBE_TTL = 10.0


@attrs.frozen
class FFmpegInfo:
    path: str
    version: str | None
    problem: str | None


@attrs.define
class Services:
    settings: Settings
    access: Access
    store: Store
    registry: Registry
    snapshots: Snapshots
    ffmpeg_path: str
    rates: RateLimiter
    connections: Connections
    origins: Policy
    shutdown: Shutdown
    trusted: tuple[Network, ...] = ()
    # one change of a stream at a time, record and upstream together; a start or a
    # snapshot reads the record and attaches under it too, so it never plays what an
    # edit just replaced or deleted
    edits: KeyedLocks[int] = attrs.Factory(KeyedLocks)
    send_path: SendPathRecord = attrs.Factory(SendPathRecord)
    metrics: EdgeTally = attrs.Factory(EdgeTally)
    _ffmpeg: FFmpegInfo | None = None
    _probed_at: float = -PROBE_TTL
    _probing: trio.Lock = attrs.Factory(trio.Lock)

    def editing(self, stream_id: int | None) -> AbstractAsyncContextManager[None]:
        """`async with`: the stream's record held still (`edits`); a `?url=` source has
        none to hold."""
        return self.edits.hold(stream_id) if stream_id is not None else nullcontext()

    async def ffmpeg(self) -> FFmpegInfo:
        """Which FFmpeg runs and its version; checked at most every PROBE_TTL seconds, and
        never twice at once: callers that come while a check runs wait for its answer
        (health is open to anyone: a crowd must not make the server fork a crowd)."""
        async with self._probing:
            if self._ffmpeg is None or trio.current_time() - self._probed_at > PROBE_TTL:
                self._ffmpeg = await probe_ffmpeg(self.ffmpeg_path)
                self._probed_at = trio.current_time()
            return self._ffmpeg


async def probe_ffmpeg(path: str) -> FFmpegInfo:
    try:
        with trio.fail_after(10):
            done = await trio.run_process([path, "-hide_banner", "-version"], capture_stdout=True,
                                          capture_stderr=True, check=False,
                                          stdin=subprocess.DEVNULL)
    except trio.TooSlowError:
        return FFmpegInfo(path, None, "ffmpeg -version took over 10 s")
    except OSError as error:  # its text names no path: health shows it to anyone
        return FFmpegInfo(path, None, f"ffmpeg cannot run: {describe_os_error(error)}")
    first = done.stdout.decode(errors="replace").splitlines()[:1]
    if done.returncode != 0 or not first or not first[0].startswith("ffmpeg version"):
        return FFmpegInfo(path, None, f"ffmpeg -version failed with exit code {done.returncode}")
    return FFmpegInfo(path, first[0].split()[2], None)


def services() -> Services:
    found: Services = current_app.extensions["rtsp"]
    return found
