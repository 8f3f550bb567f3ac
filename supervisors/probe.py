"""`probe`: what a camera sends (codecs, size, frame rate, audio), or why it cannot be read.

One short FFmpeg run that reads the camera's streams and writes nothing; the operator's
`rtsp-viewer probe URL` prints the result. Nothing here is on the media path.
"""

from __future__ import annotations

import re
import subprocess

import attrs
import trio

from .camera.urls import secrets_of
from .classify import classify
from .events import ErrorCode, Failure, describe_os_error
from .ffmpeg import Source

_STREAM = re.compile(r"^\s*Stream #\S+.*?: (Video|Audio): (.*)$", re.M)
_SIZE = re.compile(r"\b(\d{2,5})x(\d{2,5})\b")
_FPS = re.compile(r"([\d.]+) (?:fps|tbr)\b")
_RATE = re.compile(r"(\d+) Hz(?:, ([\w.()]+))?")


@attrs.frozen
class Probe:
    video: dict[str, object] | None  # codec, width, height, fps
    audio: dict[str, object] | None  # codec, sample_rate, channels


def parse(stderr: str) -> Probe | None:
    """The input's first video and audio streams as FFmpeg printed them; None if neither."""
    video = audio = None
    for kind, text in _STREAM.findall(stderr):
        codec = text.split()[0].rstrip(",")
        if kind == "Video" and video is None:
            size, fps = _SIZE.search(text), _FPS.search(text)
            video = {"codec": codec, "width": int(size.group(1)) if size else None,
                     "height": int(size.group(2)) if size else None, "fps": float(fps.group(1)) if fps else None}
        elif kind == "Audio" and audio is None:
            rate = _RATE.search(text)
            audio = {"codec": codec, "sample_rate": int(rate.group(1)) if rate else None,
                     "channels": rate.group(2) if rate else None}
    return None if video is None and audio is None else Probe(video, audio)


async def probe(ffmpeg: str, source: Source, *, camera_timeout: float) -> Probe:
    """Read the camera's streams; FFmpeg waits `camera_timeout` seconds for its answers.

    Raises Failure with the SPEC code (AUTH, NOT_FOUND, UNREACHABLE, TIMEOUT,
    STREAM_ERROR), its message masked. Cancellation ends and reaps FFmpeg."""
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-rtsp_transport", source.transport,
            "-timeout", str(int(camera_timeout * 1_000_000)), "-analyzeduration", "1000000", "-i", source.url]
    try:
        with trio.move_on_after(camera_timeout + 5) as waited:
            done = await trio.run_process(argv, stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True,
                                          check=False)
    except OSError as error:
        raise Failure(ErrorCode.STREAM_ERROR, f"cannot start {ffmpeg}: {describe_os_error(error)}") from None
    if waited.cancelled_caught:
        raise Failure(ErrorCode.TIMEOUT, f"no answer within {camera_timeout:g} s")
    stderr = done.stderr.decode(errors="replace")
    found = parse(stderr)
    if found is None:
        raise classify(stderr, secrets=secrets_of(source.url))
    return found
