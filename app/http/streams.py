"""`/api/streams/`: the registry of cameras (SPEC §3), each with its live status."""

from __future__ import annotations

import json
from collections.abc import Callable

from quart import Blueprint, g, jsonify, request
from quart.typing import ResponseReturnValue
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import BaseConverter

from supervisors import ErrorCode, Failure, RestCode

from ..errors import ApiError
from ..policy.admission import Need, door
from ..services import services
from ..store import MAX_ID, PreconditionFailed, StreamRecord
from ..targets import stream_key
from .doors import audit, grant
from .models import StreamInput, ValidationFailed, read_input, stream_json

blueprint = Blueprint("streams", __name__)
MAX_BODY = 64 * 1024
MAX_PAGE = 1000


class StreamId(BaseConverter):
    """`<stream_id:…>` in a route: ASCII digits (werkzeug's `int` takes any Unicode digit);
    an id no stream can have (0, or past the store's MAX_ID) is left to the store, which
    finds none; more than 40 digits match no route."""

    regex = "[0-9]{1,40}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: object) -> str:
        return str(value)




def stream_view(record: StreamRecord) -> dict[str, object]:
    return stream_json(record, services().registry.status(stream_key(record.id)))


async def read_json() -> object:
    """The request's JSON body; ApiError 415, 413 or 400 (VALIDATION) if it is not one."""
    if request.mimetype != "application/json":
        raise ApiError(415, RestCode.UNSUPPORTED_MEDIA_TYPE, "body must be application/json")
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise ApiError(413, RestCode.TOO_LARGE, f"body over {MAX_BODY} bytes")
    try:
        raw = await request.get_data(cache=False)
    except RequestEntityTooLarge:  # a chunked body that grew past MAX_CONTENT_LENGTH
        raise ApiError(413, RestCode.TOO_LARGE, f"body over {MAX_BODY} bytes") from None
    g.body_read = True  # the connection may carry the client's next request (errors.install)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # not JSON (or not UTF-8), or nested past the parser's depth
        raise ApiError(400, RestCode.VALIDATION, "body is not valid JSON") from None


def _validated(body: object, base: StreamRecord | None = None) -> StreamInput:
    try:
        return read_input(body, base)
    except ValidationFailed as failed:
        raise ApiError(400, RestCode.VALIDATION, str(failed), failed.fields) from None


def _if_match() -> Callable[[StreamRecord], bool]:
    """What an `If-Match` header asks of the stored stream (RFC 9110 §13.1.1: `*`, or one
    of the listed strong tags); anything, without one."""
    if "If-Match" not in request.headers:
        return lambda stored: True
    wanted = request.if_match
    return lambda stored: wanted.contains(stored.etag.strip('"'))


async def stream_record(stream_id: int) -> StreamRecord:
    """The stored stream; ApiError 404 if there is none."""
    record = await services().store.get(stream_id)
    if record is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, f"no stream {stream_id}")
    return record


def _page_arg(name: str, low: int, high: int) -> int | None:
    values = request.args.getlist(name)
    if not values:
        return None
    value = values[0]
    if len(values) > 1 or not (value.isascii() and value.isdigit() and len(value) <= 19) or not low <= int(value) <= high:
        raise ApiError(400, RestCode.VALIDATION, f"{name} must be an integer {low}-{high}", {name: f"must be an integer {low}-{high}"})
    return int(value)


@blueprint.route("/api/streams/", strict_slashes=False, methods=["GET"])
@door(Need.USER)
async def list_streams() -> ResponseReturnValue:
    """All streams by id (a viewer's: those granted to it), or a page of them: `?limit=`
    (1-MAX_PAGE) and `?offset=`."""
    limit, offset = _page_arg("limit", 1, MAX_PAGE), _page_arg("offset", 0, MAX_ID)
    found = grant()
    only = None if found is None or found.admin else found.streams
    records = await services().store.all(limit=limit, offset=offset or 0, only=only)
    return jsonify([stream_view(r) for r in records])


@blueprint.route("/api/streams/", strict_slashes=False, methods=["POST"])
@door(Need.ADMIN)
async def create_stream() -> ResponseReturnValue:
    data = _validated(await read_json())
    record = await services().store.create(data.name, data.url, data.transport, data.profile)
    audit("stream.create", str(record.id), ["name", "url", "transport", "profile"])
    return jsonify(stream_view(record)), 201, {"Location": f"/api/streams/{record.id}/", "ETag": record.etag}


@blueprint.route("/api/streams/<stream_id:stream_id>/", strict_slashes=False, methods=["GET"])
@door(Need.USER)  # a viewer's other streams are NOT_FOUND (admission)
async def get_stream(stream_id: int) -> ResponseReturnValue:
    record = await stream_record(stream_id)
    return jsonify(stream_view(record)), 200, {"ETag": record.etag}


@blueprint.route("/api/streams/<stream_id:stream_id>/", strict_slashes=False, methods=["PATCH"])
@door(Need.ADMIN)
async def patch_stream(stream_id: int) -> ResponseReturnValue:
    """The fields sent, merged onto the stream as it is stored when the change is written
    (a concurrent PATCH of other fields is kept); a running upstream restarts on a new
    source. With `If-Match`, 412 unless the stream is still at that ETag."""
    body = await read_json()
    s = services()
    async with s.edits.hold(stream_id):  # the record and its upstream change together
        try:
            changed = await s.store.patch(stream_id, lambda stored: _validated(body, stored), expect=_if_match())
        except PreconditionFailed as failed:
            raise ApiError(412, RestCode.PRECONDITION_FAILED, f"{failed}: not the version of If-Match") from None
        if changed is None:
            raise ApiError(404, ErrorCode.NOT_FOUND, f"no stream {stream_id}")
        before, record = changed
        if record.source != before.source:
            s.registry.restart(stream_key(stream_id), record.source)
    audit("stream.update", str(stream_id), sorted(body) if isinstance(body, dict) else None)
    return jsonify(stream_view(record)), 200, {"ETag": record.etag}


@blueprint.route("/api/streams/<stream_id:stream_id>/", strict_slashes=False, methods=["DELETE"])
@door(Need.ADMIN)
async def delete_stream(stream_id: int) -> ResponseReturnValue:
    s = services()
    async with s.edits.hold(stream_id):
        try:
            deleted = await s.store.delete(stream_id, expect=_if_match())
        except PreconditionFailed as failed:
            raise ApiError(412, RestCode.PRECONDITION_FAILED, f"{failed}: not the version of If-Match") from None
        if not deleted:
            raise ApiError(404, ErrorCode.NOT_FOUND, f"no stream {stream_id}")
        s.registry.remove(stream_key(stream_id), Failure(ErrorCode.NOT_FOUND, "stream deleted"))
    audit("stream.delete", str(stream_id))
    return "", 204
