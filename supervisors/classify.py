"""FFmpeg stderr classification: which SPEC error code a failed attempt deserves.

Classification reads stderr and timing, never the exit status alone: FFmpeg exits 0
after "Connection timed out", for one. Pure functions; nothing here awaits.
"""

from __future__ import annotations

import re

from .camera.urls import mask_text
from .events import ErrorCode, Failure

_RULES: list[tuple[ErrorCode, re.Pattern[str], str]] = [
    (ErrorCode.AUTH, re.compile(r"(failed|returned):? 40[13]\b|Unauthori[sz]ed|Forbidden|authorization failed",
                      re.I), "camera refused the credentials"),
    (ErrorCode.NOT_FOUND, re.compile(r"(failed|returned):? 404\b|404 Not Found|\bNot Found\b", re.I),
     "camera has no such stream"),
    (ErrorCode.UNREACHABLE, re.compile(
        r"Connection refused|No route to host|Network is unreachable|Name or service not known|"
        r"Temporary failure in name resolution|Failed to resolve hostname|"
        r"nodename nor servname|Cannot assign requested address|Host is unreachable", re.I),
     "camera unreachable"),
    (ErrorCode.TIMEOUT, re.compile(r"timed out|Timeout", re.I), "no media within the timeout"),
]
# what a client that played by URL is told: one message per code, never FFmpeg's text
GENERIC = {code: summary for code, _, summary in _RULES} | {ErrorCode.STREAM_ERROR: "the stream failed",
                                                            ErrorCode.FORBIDDEN: "source refused by policy"}
_NOISE = re.compile(r"^\s*(Input #|Output #|Stream #|Stream mapping|Press \[q\]|Metadata|"
                    r"Duration|title|encoder|comment|\[out#|frame=)", re.I)
_ADDRESS = re.compile(r" @ 0x[0-9a-f]+\]", re.I)  # "[tcp @ 0x55d0c1a2b3c0]": a heap address
EXCERPT = 300


def classify(stderr: str, *, secrets: tuple[str, ...] = ()) -> Failure:
    """The failure an FFmpeg run with this stderr tail stands for: its credentials
    (any URL's, and `secrets` in any spelling) masked, its heap addresses left out."""
    for code, pattern, summary in _RULES:
        match = pattern.search(stderr)
        if match:
            return Failure(code, _clean(f"{summary}: {_line_at(stderr, match.start())}", secrets))
    return Failure(ErrorCode.STREAM_ERROR, _clean(excerpt(stderr) or "ffmpeg ended", secrets))


def _clean(text: str, secrets: tuple[str, ...]) -> str:
    return _ADDRESS.sub("]", mask_text(text, *secrets))[:EXCERPT]


def excerpt(stderr: str) -> str:
    """The last meaningful lines of stderr, the progress and banner noise left out."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not _NOISE.match(ln)]
    return " | ".join(lines[-3:])


def _line_at(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text[start : end if end >= 0 else len(text)].strip()


_VIDEO = re.compile(r"Stream #\S+.*?: Video: (\w+).*?, (\d{2,5})x(\d{2,5})")


def video_info(stderr: str) -> dict[str, object] | None:
    """{codec, width, height} of the input's video stream, once FFmpeg has printed it."""
    match = _VIDEO.search(stderr)
    if match is None:
        return None
    return {"codec": match.group(1), "width": int(match.group(2)), "height": int(match.group(3))}
