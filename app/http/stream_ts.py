"""`GET /api/streams/{id}/stream.ts` and `stream.mp4`: one camera as a chunked MPEG-TS or
fragmented MP4 response.

For VLC, ffplay, `ffmpeg -i` and mpegts.js's HTTP loader (as go2rtc's `/api/stream.ts`
and `/api/stream.mp4`); the MP4 is the fMP4 of the sockets' `format=fmp4`: init segment,
then one fragment per frame from a keyframe on.
The response is a viewer like a socket's: the same shared upstream, GOP cache (it starts
with PAT, PMT and a keyframe), limits and slow-viewer rules. Before the first byte a
failure is an error body with its HTTP status (`HTTP_STATUS`: LIMIT 429, AUTH 403, ...);
after it, a failure or SLOW_CONSUMER ends the response.

Cancellation: when the client goes away quart-trio cancels the request; closing the body
generator leaves the upstream at once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, aclosing

import trio
from quart import Blueprint, Response, g
from quart.typing import ResponseReturnValue

from supervisors import HTTP_STATUS, Close, ErrorCode, Failure, MediaFormat

from ..errors import ApiError
from ..policy import admission
from ..policy.admission import Need, door, rechecked
from ..services import Services, services
from ..targets import format_refused, stream_key

blueprint = Blueprint("stream_http", __name__)
MIMETYPES = {MediaFormat.MPEGTS: "video/mp2t", MediaFormat.FMP4: "video/mp4"}


@blueprint.route("/api/streams/<stream_id:stream_id>/stream.ts", methods=["GET"])
@door(Need.WATCH, holds=True, query_token=True)  # players send no headers
async def stream_ts(stream_id: int) -> ResponseReturnValue:
    return await _stream(stream_id, MediaFormat.MPEGTS)


@blueprint.route("/api/streams/<stream_id:stream_id>/stream.mp4", methods=["GET"])
@door(Need.WATCH, holds=True, query_token=True)
async def stream_mp4(stream_id: int) -> ResponseReturnValue:
    return await _stream(stream_id, MediaFormat.FMP4)


async def _stream(stream_id: int, media_format: MediaFormat) -> ResponseReturnValue:
    s = services()
    held = ExitStack()  # this client's share of MAX_CONNECTIONS_PER_CLIENT, for the response's life
    if (share := g.admitted.handover()) is not None:  # (taken by the door, app/policy/admission.py)
        held.push(share)
    media = _media(s, stream_id, g.client_key, media_format, peer=g.admitted.peer,
                   still=rechecked(g.knock, g.admitted, s))  # a user's stream plays while the user may watch
    # the first item decides the status: media (200, streaming) or a failure (its error body)
    try:
        with trio.move_on_after(s.settings.ffmpeg_timeout + 1) as waited:
            first = await anext(media)
    except BaseException:  # the client left before the first byte (cancelled): give the share back now
        held.close()  # (not when the garbage collector ends the hold's generator)
        raise
    if waited.cancelled_caught:
        first = Failure(ErrorCode.TIMEOUT, f"no media within {s.settings.ffmpeg_timeout:g} s")
    if isinstance(first, Failure):
        await media.aclose()
        held.close()
        raise ApiError(HTTP_STATUS[first.code], first.code, first.message)
    response = Response(_body(first, media, held), mimetype=MIMETYPES[media_format],
                        headers={"Cache-Control": "no-store"})
    response.timeout = None  # live: no RESPONSE_TIMEOUT
    return response


async def _body(first: bytes, media: AsyncGenerator[bytes | Failure, None], held: ExitStack) -> AsyncIterator[bytes]:
    with held:
        async with aclosing(media):
            yield first
            async for item in media:
                if isinstance(item, Failure):
                    return
                yield item


async def _media(s: Services, stream_id: int, client: str, media_format: MediaFormat, *,
                 peer: bool = False, still: Callable[[], Awaitable[ErrorCode | None]] | None = None,
                 ) -> AsyncGenerator[bytes | Failure, None]:
    """A viewer's media; a failure (then nothing more) ends it. The stream's record is read
    and the viewer attached while the record is held still (`Services.edits`); another
    node of the cluster (`peer`) joins the upstream running here, if one does, without
    reading the record. `still`: asked every `admission.RECHECK` seconds whether a user
    may still watch (`still_watches`); when not, the media ends."""
    with s.registry.open_viewer(client) as viewer:
        viewer.format = media_format
        async with s.editing(stream_id):
            # another node joins what plays here without the database (it may be restarting)
            source = s.registry.source(stream_key(stream_id)) if peer else None
            if source is None:
                record = await s.store.get(stream_id)
                source = None if record is None else record.source
            failure = Failure(ErrorCode.NOT_FOUND, f"no stream {stream_id}") if source is None else \
                format_refused(media_format, source)
            if failure is None and source is not None:
                try:
                    s.registry.attach(viewer, stream_key(stream_id), source, peer=peer)
                except Failure as refused:
                    failure = refused
        if failure is not None:
            yield failure
            return
        check_at = trio.current_time() + admission.RECHECK
        while True:
            item = await viewer.next()
            if still is not None and trio.current_time() >= check_at:
                if await still() is not None:
                    return
                check_at = trio.current_time() + admission.RECHECK
            if isinstance(item, bytes):
                yield item
            elif isinstance(item, Failure):
                yield item
                return
            elif isinstance(item, Close):
                return
