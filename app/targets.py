"""What a viewer watches, named as the engine knows it: a stored stream's key (`id:3`) or
a URL's (`url:…`), the label metrics and logs show for a key, and whether a stream can be
played in a format. One home for these, shared by the HTTP routes and the sockets."""

from __future__ import annotations

from supervisors import ErrorCode, Failure, MediaFormat, Source, VideoMode

STREAM_PREFIX, URL_PREFIX = "id:", "url:"
URL_STREAMS = "url"  # the label of every socket that plays its own URL


def stream_key(stream_id: int) -> str:
    """The engine's key of a stored stream."""
    return f"{STREAM_PREFIX}{stream_id}"


def url_key(source: Source) -> str:
    """The engine's key of a socket that plays its own URL (one upstream per source)."""
    return f"{URL_PREFIX}{source.key}"


def stream_label(key: str) -> str:
    """`id:3` → `3`; any URL → URL_STREAMS (labels carry ids, never a URL)."""
    return key.removeprefix(STREAM_PREFIX) if key.startswith(STREAM_PREFIX) else URL_STREAMS


def format_refused(media_format: MediaFormat, source: Source) -> Failure | None:
    """Why this stream cannot be played in this format, if it cannot (for the sockets and
    the HTTP streams alike)."""
    if media_format is MediaFormat.FMP4 and source.profile.video is VideoMode.MPEG1:
        return Failure(ErrorCode.BAD_REQUEST, "format fmp4 needs video copy or h264 (this stream is mpeg1)")
    return None
