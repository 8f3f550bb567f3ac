"""`GET /api/streams/{id}/snapshot.jpg[?width=]`: the stream's latest keyframe as a JPEG
(supervisors/snapshot.py): from the running upstream's cache, or from a brief connection
within FFMPEG_TIMEOUT. Failures use the error body with the SPEC codes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from quart import Blueprint, Response, g, request
from quart.typing import ResponseReturnValue

from supervisors import HTTP_STATUS, Failure, RestCode, Source

from ..errors import ApiError
from ..policy.admission import Need, door
from ..services import services
from ..targets import stream_key

blueprint = Blueprint("snapshot", __name__)
WIDTHS = range(16, 4097)  # pixels


@blueprint.route("/api/streams/<stream_id:stream_id>/snapshot.jpg", methods=["GET"])
@door(Need.WATCH, query_token=True)  # <img> and <video poster> send no headers
async def snapshot(stream_id: int) -> ResponseReturnValue:
    given = request.args.get("width")
    width = None
    if given is not None:
        if not (given.isascii() and given.isdigit()) or int(given) not in WIDTHS:
            raise ApiError(400, RestCode.VALIDATION, "invalid width",
                           {"width": f"must be an integer, {WIDTHS.start}-{WIDTHS.stop - 1}"})
        width = int(given)
    s = services()
    missing = False

    @asynccontextmanager
    async def load() -> AsyncIterator[Source | None]:
        """The record as it is once the snapshot's turn has come, held still while it is
        read and the snapshot attaches (an edit waits: `Services.edits`)."""
        nonlocal missing
        async with s.edits.hold(stream_id):
            record = await s.store.get(stream_id)
            missing = record is None
            yield None if record is None else record.source

    try:
        jpeg = await s.snapshots.jpeg(stream_key(stream_id), load, g.client_key, width)
    except Failure as failure:
        message = f"no stream {stream_id}" if missing else failure.message
        raise ApiError(HTTP_STATUS[failure.code], failure.code, message) from None
    return Response(jpeg, 200, {"Content-Type": "image/jpeg", "Cache-Control": "no-store"})
