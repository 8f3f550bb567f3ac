"""`GET /api/streams/{id}/snapshot.jpg[?width=]`: the stream's latest keyframe as a JPEG
(supervisors/snapshot.py): from the running upstream's cache, or from a brief connection
within FFMPEG_TIMEOUT. Failures use the error body with the SPEC codes."""

from __future__ import annotations

from quart import Blueprint, Response, g, request
from quart.typing import ResponseReturnValue

from supervisors import HTTP_STATUS, ErrorCode, Failure

from .admission import Need, door
from .errors import ApiError
from .services import services
from .streams import stream_key

blueprint = Blueprint("snapshot", __name__)
WIDTHS = range(16, 4097)  # pixels


@blueprint.route("/api/streams/<stream_id:stream_id>/snapshot.jpg", methods=["GET"])
@door(Need.WATCH, query_token=True)  # <img> and <video poster> send no headers
async def snapshot(stream_id: int) -> ResponseReturnValue:
    given = request.args.get("width")
    width = None
    if given is not None:
        if not (given.isascii() and given.isdigit()) or int(given) not in WIDTHS:
            raise ApiError(400, "VALIDATION", "invalid width",
                           {"width": f"must be an integer, {WIDTHS.start}-{WIDTHS.stop - 1}"})
        width = int(given)
    s = services()
    record = await s.store.get(stream_id)
    if record is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, f"no stream {stream_id}")
    try:
        jpeg = await s.snapshots.jpeg(stream_key(stream_id), record.source, g.client_key, width)
    except Failure as failure:
        raise ApiError(HTTP_STATUS[failure.code], failure.code, failure.message) from None
    return Response(jpeg, 200, {"Content-Type": "image/jpeg", "Cache-Control": "no-store"})
