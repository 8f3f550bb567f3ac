"""What the routes share: settings, storage, the engine's registry, FFmpeg's identity.

Stored on the app (`app.extensions["rtsp"]`), created by the factory, opened and closed
with the app's serving lifetime.
"""

from __future__ import annotations

import subprocess
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext

import attrs
import trio
from quart import current_app

from supervisors import Registry
from supervisors.camera.addresses import Network
from supervisors.events import describe_os_error
from supervisors.locks import KeyedLocks
from supervisors.snapshot import Snapshots

from .accounts import Accounts
from .cluster import Cluster
from .counts import EdgeTally, SendPathRecord
from .policy.limits import Connections, RateLimiter
from .policy.origins import Policy
from .policy.tokens import Access
from .process import Shutdown
from .settings import Settings
from .store import Store

PROBE_TTL = 10.0


@attrs.frozen
class FFmpegInfo:
    path: str
    version: str | None
    problem: str | None


@attrs.define
class FFmpegCheck:
    """Which FFmpeg runs and its version (`probe`): checked at most every PROBE_TTL
    seconds, and never twice at once: callers that come while a check runs wait for its
    answer (health is open to anyone: a crowd must not make the server fork a crowd)."""

    path: str
    probe: Callable[[str], Awaitable[FFmpegInfo]] = attrs.field(factory=lambda: probe_ffmpeg)
    _info: FFmpegInfo | None = None
    _at: float = -PROBE_TTL
    _lock: trio.Lock = attrs.Factory(trio.Lock)

    async def info(self) -> FFmpegInfo:
        """The last answer if it is fresh, else a new one. Cancellation: a caller that
        leaves while the check runs leaves it to finish for the others (it is shielded
        for its own bounded 10 s)."""
        async with self._lock:
            if self._info is not None and trio.current_time() - self._at <= PROBE_TTL:
                return self._info
            with trio.CancelScope(shield=True):
                info = await self.probe(self.path)
            self._info, self._at = info, trio.current_time()
            return info


@attrs.define
class Services:
    settings: Settings
    access: Access
    store: Store
    registry: Registry
    cluster: Cluster
    snapshots: Snapshots
    ffmpeg: FFmpegCheck
    rates: RateLimiter
    connections: Connections
    origins: Policy
    shutdown: Shutdown
    accounts: Accounts
    trusted: tuple[Network, ...] = ()
    # one change of a stream at a time, record and upstream together; a start or a
    # snapshot reads the record and attaches under it too, so it never plays what an
    # edit just replaced or deleted
    edits: KeyedLocks[int] = attrs.Factory(KeyedLocks)
    send_path: SendPathRecord = attrs.Factory(SendPathRecord)
    metrics: EdgeTally = attrs.Factory(EdgeTally)

    def editing(self, stream_id: int | None) -> AbstractAsyncContextManager[None]:
        """`async with`: the stream's record held still (`edits`); a `?url=` source has
        none to hold."""
        return self.edits.hold(stream_id) if stream_id is not None else nullcontext()


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
