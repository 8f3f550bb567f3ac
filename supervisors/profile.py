"""A stream's media profile: what its one FFmpeg makes of the camera's media.

`copy` (the default) passes the camera's video through; `h264` transcodes it with libx264
(`zerolatency`, the camera's size or at most `max_height` lines, a keyframe every 2 s so
that joiners start soon, at most 4 Mbit/s) for H.265 or odd cameras; `mpeg1` makes
mpeg1video without B-frames at 2 Mbit/s for JSMpeg players. `audio` carries the camera's first audio track as AAC (MP2
with mpeg1); a camera without audio still plays. Pure code.
"""

from __future__ import annotations

import attrs

from .events import VideoMode

KEYFRAME_EVERY = 2  # seconds between the keyframes a transcoding profile makes
MIN_HEIGHT, MAX_HEIGHT = 16, 4320
MPEG1_RATE = 25  # MPEG-1 allows only a few frame rates; 25 is one of them
# capped rates: a noisy scene would otherwise come out at 5-10 times the camera's own
# (measured: 2 Mbit/s of noise became 10 Mbit/s at 640x360 and 22 at 1280x720 uncapped)
H264_MAXRATE = "4M"
MPEG1_RATE_BITS = "2M"  # JSMpeg decodes in JavaScript: its docs keep to 1-2 Mbit/s


@attrs.frozen
class Profile:
    video: VideoMode = VideoMode.COPY
    audio: bool = False
    max_height: int | None = None  # for h264 and mpeg1; None: the camera's size

    @property
    def transcoded(self) -> bool:
        """Does FFmpeg decode and encode the video (CPU per stream) rather than copy it?"""
        return self.video is not VideoMode.COPY

    def output_args(self) -> list[str]:
        """FFmpeg's stream selection and codec options for MPEG-TS output."""
        args = ["-map", "0:v:0"]
        scale = ["-vf", f"scale=-2:'min(ih,{self.max_height})'"] if self.max_height else []
        if self.video is VideoMode.H264:
            args += ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
                     "-crf", "23", "-maxrate", H264_MAXRATE, "-bufsize", H264_MAXRATE,
                     "-force_key_frames", f"expr:gte(t,n_forced*{KEYFRAME_EVERY})", *scale]
        elif self.video is VideoMode.MPEG1:
            args += ["-c:v", "mpeg1video", "-bf", "0", "-b:v", MPEG1_RATE_BITS, "-maxrate", MPEG1_RATE_BITS,
                     "-bufsize", MPEG1_RATE_BITS, "-r", str(MPEG1_RATE), "-g", str(MPEG1_RATE * KEYFRAME_EVERY),
                     "-pix_fmt", "yuv420p", *scale]
        else:
            args += ["-c:v", "copy"]
        if not self.audio:
            return [*args, "-an", "-sn", "-dn"]
        codec = ["-c:a", "mp2", "-b:a", "128k"] if self.video is VideoMode.MPEG1 else ["-c:a", "aac", "-b:a", "64k"]
        return [*args, "-map", "0:a:0?", *codec, "-sn", "-dn"]


DEFAULT = Profile()  # copy the video, no audio
