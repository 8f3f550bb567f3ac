"""The socket protocol's messages (SPEC §4): what a socket's query asks to watch
(`parse_query`), the actions a client sends (`parse_action`) and the JSON frames it gets
(`event_json`). Pure: the per-socket tasks that run them are `app/sockets/session.py`."""

from __future__ import annotations

import json

import attrs
from werkzeug.datastructures import MultiDict

from supervisors import (
    Action,
    ErrorCode,
    Failure,
    InvalidUrl,
    Media,
    MediaFormat,
    MessageType,
    Source,
    Status,
    Transport,
    validate_url,
)

from ..store import MAX_ID, Store
from ..targets import stream_key, url_key

MAX_MESSAGE = 4096


@attrs.frozen
class Target:
    """What a socket watches: a registered stream (re-read at each start) or a URL."""

    key: str
    stream_id: int | None = None
    source: Source | None = None
    format: MediaFormat = MediaFormat.MPEGTS  # `format=`: what its binary frames carry

    async def resolve(self, store: Store) -> Source | None:
        if self.source is not None:
            return self.source
        assert self.stream_id is not None
        record = await store.get(self.stream_id)
        return None if record is None else record.source


def parse_query(args: MultiDict[str, str]) -> Target | Failure:
    if any(len(args.getlist(key)) > 1 for key in args):
        return Failure(ErrorCode.BAD_REQUEST, "give each query parameter once")
    stream_id, url = args.get("id"), args.get("url")
    if (stream_id is None) == (url is None):
        return Failure(ErrorCode.BAD_REQUEST, "give exactly one of id=<stream id> or url=<rtsp url>")
    try:
        media_format = MediaFormat(args.get("format", MediaFormat.MPEGTS))
    except ValueError:
        return Failure(ErrorCode.BAD_REQUEST, f"format must be {' or '.join(MediaFormat)}")
    if stream_id is not None:
        if not (stream_id.isascii() and stream_id.isdigit()) or not 0 < int(stream_id) <= MAX_ID:
            return Failure(ErrorCode.BAD_REQUEST, "id must be a positive integer")
        return Target(stream_key(int(stream_id)), stream_id=int(stream_id), format=media_format)
    assert url is not None
    try:
        transport = Transport(args.get("transport", Transport.TCP))
    except ValueError:
        return Failure(ErrorCode.BAD_REQUEST, f"transport must be {' or '.join(Transport)}")
    try:
        source = Source(validate_url(url), transport)
    except InvalidUrl as error:
        return Failure(ErrorCode.BAD_REQUEST, f"url {error}")
    return Target(url_key(source), source=source, format=media_format)


def event_json(event: Status | Failure | Media) -> str:
    if isinstance(event, Status):
        return json.dumps({"type": MessageType.STATUS, "phase": event.phase})
    if isinstance(event, Media):
        return json.dumps({"type": MessageType.MEDIA, "mime": event.mime})
    return json.dumps({"type": MessageType.ERROR, "code": event.code, "message": event.message})



def parse_action(message: str | bytes) -> Action | Failure:
    if isinstance(message, bytes):
        return Failure(ErrorCode.BAD_REQUEST, "binary messages are not accepted")
    if len(message.encode()) > MAX_MESSAGE:
        return Failure(ErrorCode.BAD_REQUEST, f"message over {MAX_MESSAGE} bytes")
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return Failure(ErrorCode.BAD_REQUEST, "message is not JSON")
    action = data.get("action") if isinstance(data, dict) else None
    if not isinstance(action, str) or action not in set(Action):
        return Failure(ErrorCode.BAD_REQUEST, f"action must be one of {', '.join(Action)}")
    return Action(action)
