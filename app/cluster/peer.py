"""A stream read from the node that holds its camera: that node's `stream.ts`.

The request carries a node token (`Access.node_token`: signed with the cluster's
SECRET_KEY), which watches any stream and spends none of the per-client limits; the
owner's answer before its first byte is its error body, so a failure of the camera
(AUTH, NOT_FOUND, TIMEOUT …) reaches this node's viewers with the owner's code.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import cast

import httpx
import trio

from supervisors import ErrorCode, Failure

CONNECT_TIMEOUT = 3.0
# seconds for a node's answer's status line: one that gives none is not there (frozen). Over
# the database pool's 3 s: a node waiting for its database still answers in time (503)
ANSWER_WITHIN = 5.0
ERROR_BODY_MAX = 16 * 1024
CHUNKS_AHEAD = 16  # read ahead of the upstream at most this many chunks


class Body(trio.abc.ReceiveStream):
    """An HTTP response's body as the stream an upstream reads (`Run.stdout`): a task of
    its own reads the response (`pump`) into a channel, so a read that is cancelled (the
    upstream's gathering window, its watchdog) loses nothing and ends nothing. A broken
    connection is its end (the upstream then asks `PeerRun.failure`)."""

    def __init__(self, chunks: trio.MemoryReceiveChannel[bytes]) -> None:
        self._chunks = chunks
        self._left = b""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if not self._left:
            try:
                self._left = await self._chunks.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return b""
        if max_bytes is None or len(self._left) <= max_bytes:
            chunk, self._left = self._left, b""
        else:
            chunk, self._left = self._left[:max_bytes], self._left[max_bytes:]
        return chunk

    async def aclose(self) -> None:
        await self._chunks.aclose()


async def pump(response: httpx.Response, into: trio.MemorySendChannel[bytes], run: PeerRun) -> None:
    """Read the response's body into the channel until it ends (then close the channel)."""
    async with into, aclosing(cast(AsyncGenerator[bytes, None], response.aiter_raw())) as chunks:
        try:
            async for chunk in chunks:
                await into.send(chunk)
        except httpx.HTTPError as error:
            run.lost = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        except trio.BrokenResourceError:
            pass  # the upstream stopped reading


class PeerRun:
    """One attempt that reads the owner's stream (a `Run`, as FFmpeg's is)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.lost: str | None = None
        self.stdout: trio.abc.ReceiveStream

    async def finish(self) -> None:
        await trio.lowlevel.checkpoint()

    def failure(self) -> Failure:
        why = f": {self.lost}" if self.lost else ""
        return Failure(ErrorCode.STREAM_ERROR, f"the stream from node {self.owner}, which holds the camera, ended{why}")

    def video(self) -> dict[str, object] | None:
        return None

    def cpu_seconds(self) -> float | None:
        return None


def _failure(status: int, body: bytes, owner: str) -> Failure:
    """The owner's refusal as the failure its viewers would have seen."""
    try:
        error = json.loads(body)["error"]
        return Failure(ErrorCode(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        return Failure(ErrorCode.STREAM_ERROR, f"node {owner} answered {status}")


class Unreachable(Exception):
    """The node named as the camera's holder does not answer (dead, or frozen). A node
    that answers, even with an error, is alive: its camera is never taken from it."""


async def connect(client: httpx.AsyncClient, owner: str, url: str, stream_id: int, token: str) -> httpx.Response:
    """Ask node `owner` at `url` for stream `stream_id`: its streaming response. Raises
    Unreachable when the node cannot be reached, Failure when it refuses (its own error
    code)."""
    request = client.build_request("GET", f"{url}/api/streams/{stream_id}/stream.ts",
                                   headers={"Authorization": f"Bearer {token}"})
    response: httpx.Response | None = None
    with trio.move_on_after(ANSWER_WITHIN):
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as error:
            raise Unreachable(f"node {owner}, which holds the camera, cannot be reached: {type(error).__name__}") \
                from None
    if response is None:  # connected (a frozen process's kernel accepts) but no answer
        raise Unreachable(f"node {owner}, which holds the camera, did not answer within {ANSWER_WITHIN:g} s")
    if response.status_code == 200:
        return response
    try:
        refusal = b""
        async for chunk in response.aiter_raw():
            refusal += chunk
            if len(refusal) > ERROR_BODY_MAX:
                break
    finally:
        with trio.CancelScope(shield=True):
            await response.aclose()
    raise _failure(response.status_code, refusal, owner)


@asynccontextmanager
async def reading(response: httpx.Response, owner: str) -> AsyncIterator[PeerRun]:
    """The stream of a `connect`ed response as an attempt's Run. Cancellation: the request
    ends."""
    run = PeerRun(owner)
    try:
        into, chunks = trio.open_memory_channel[bytes](CHUNKS_AHEAD)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, response, into, run)
            run.stdout = Body(chunks)
            try:
                yield run
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await response.aclose()


def client() -> httpx.AsyncClient:
    """The HTTP client one node reads its peers with (no read timeout: the upstream's
    watchdog decides when a stream stalled)."""
    return httpx.AsyncClient(timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT), trust_env=False,
                             limits=httpx.Limits(max_connections=None, max_keepalive_connections=0))
