"""The JSON shapes of the REST API and the one cattrs converter that reads and writes them.

Input: `StreamInput` (create, and PATCH merged onto the stored stream), unknown fields
rejected, every failing field named. Output: the Stream object of SPEC §3, its URL's
password masked; the password never leaves through this converter.
"""

from __future__ import annotations

import unicodedata
from typing import Any, NewType

import attrs
import cattrs
from cattrs.preconf.json import make_converter

from supervisors import (
    CONTROL,
    InvalidUrl,
    Profile,
    Transport,
    UpstreamStatus,
    VideoMode,
    keep_masked,
    mask_url,
    validate_url,
)
from supervisors.profile import MAX_HEIGHT, MIN_HEIGHT

from ..policy.validation import FieldError, field_errors
from ..store import StreamRecord, iso

Name = NewType("Name", str)
Url = NewType("Url", str)
Flag = NewType("Flag", bool)
Height = NewType("Height", int)
MAX_NAME = 200


@attrs.frozen
class StreamInput:
    name: Name
    url: Url
    transport: Transport = Transport.TCP
    video: VideoMode = VideoMode.COPY
    audio: Flag = Flag(False)
    max_height: Height | None = None

    @property
    def profile(self) -> Profile:
        return Profile(self.video, self.audio, self.max_height)


def _name(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise FieldError("must be a string")
    text = unicodedata.normalize("NFC", value.strip())
    if not 1 <= len(text) <= MAX_NAME:
        raise FieldError(f"must be 1-{MAX_NAME} characters after trimming")
    if CONTROL.search(text):
        raise FieldError("must not contain control, zero-width or bidi characters")
    return text


def _url(value: object, _: object) -> str:
    try:
        return validate_url(value)
    except InvalidUrl as error:
        raise FieldError(str(error)) from None


def _transport(value: object, _: object) -> Transport:
    try:
        return Transport(value)  # type: ignore[arg-type]  # anything JSON: not a member raises
    except ValueError:
        raise FieldError(f"must be {' or '.join(Transport)}") from None


def _video(value: object, _: object) -> VideoMode:
    try:
        return VideoMode(value)  # type: ignore[arg-type]
    except ValueError:
        raise FieldError(f"must be {', '.join(VideoMode)}") from None


def _flag(value: object, _: object) -> bool:
    if not isinstance(value, bool):
        raise FieldError("must be true or false")
    return value


def _height(value: object, _: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_HEIGHT <= value <= MAX_HEIGHT:
        raise FieldError(f"must be an integer {MIN_HEIGHT}-{MAX_HEIGHT}, or null")
    return value


def _status(status: UpstreamStatus) -> dict[str, Any]:
    error = status.error
    return {
        "phase": status.phase, "viewers": status.viewers, "since": iso(status.since),
        "error": None if error is None else {"code": error.code, "message": error.message,
                                             "at": iso(error.at)},
        "video": status.video, "bytes_in": status.bytes_in, "drops": status.drops,
        "restarts": status.restarts, "transcoding": status.transcoding, "cpu_percent": status.cpu_percent,
    }


converter = make_converter(forbid_extra_keys=True)
converter.register_structure_hook(Name, _name)
converter.register_structure_hook(Url, _url)
converter.register_structure_hook(Transport, _transport)
converter.register_structure_hook(VideoMode, _video)
converter.register_structure_hook(Flag, _flag)
converter.register_structure_hook(Height, _height)
converter.register_unstructure_hook(UpstreamStatus, _status)


class ValidationFailed(Exception):
    def __init__(self, message: str, fields: dict[str, str]) -> None:
        super().__init__(message)
        self.fields = fields


def read_input(body: object, base: StreamRecord | None = None) -> StreamInput:
    """Validate a create body, or a PATCH body merged onto the stored stream.

    Raises ValidationFailed naming each bad field; a masked credential (***) in the URL
    is replaced by the stored one, or refused when there is none for that host."""
    if not isinstance(body, dict):
        raise ValidationFailed("body must be a JSON object", {})
    merged = dict(body)
    if base is not None:
        merged = {"name": base.name, "url": base.url, "transport": base.transport, "video": base.profile.video,
                  "audio": base.profile.audio, "max_height": base.profile.max_height, **body}
    try:
        data = converter.structure(merged, StreamInput)
    except cattrs.ClassValidationError as error:
        fields = field_errors(error)
        raise ValidationFailed("invalid stream: " + ", ".join(sorted(fields)), fields) from None
    try:  # an edit form sends back the masked URL it was given: keep the stored credentials
        return attrs.evolve(data, url=Url(keep_masked(data.url, base.url if base is not None else None)))
    except InvalidUrl as error:
        raise ValidationFailed("invalid stream: url", {"url": str(error)}) from None


def stream_json(record: StreamRecord, status: UpstreamStatus) -> dict[str, Any]:
    return {
        "id": record.id, "name": record.name, "url": mask_url(record.url),
        "transport": record.transport, "video": record.profile.video, "audio": record.profile.audio,
        "max_height": record.profile.max_height, "created_at": record.created_at,
        "updated_at": record.updated_at, "status": converter.unstructure(status),
    }
