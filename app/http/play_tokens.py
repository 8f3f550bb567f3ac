"""`POST /api/streams/{id}/play-token`: hands out play tokens (app/policy/tokens.py makes and
checks them; app/policy/admission.py says where they open)."""

from __future__ import annotations

from quart import Blueprint, jsonify, request
from quart.typing import ResponseReturnValue

from supervisors import RestCode

from ..errors import ApiError
from ..policy.admission import Need, door
from ..policy.tokens import MAX_TTL
from ..services import services
from ..store import iso
from .streams import read_json, stream_record

blueprint = Blueprint("play_tokens", __name__)
DEFAULT_TTL = 300


@blueprint.route("/api/streams/<stream_id:stream_id>/play-token", strict_slashes=False, methods=["POST"])
@door(Need.USER)  # a viewer: for its own streams only (admission)
async def play_token(stream_id: int) -> ResponseReturnValue:
    """`{"ttl": seconds}` (1 … a week, default 300) → `{"token", "stream_id", "expires_at"}`:
    a token that watches this stream, and nothing else, until it expires."""
    body = await read_json() if request.content_length or request.mimetype else {}
    if not isinstance(body, dict) or set(body) - {"ttl"}:
        raise ApiError(400, RestCode.VALIDATION, "body must be {\"ttl\": seconds}", {"ttl": "the only field"})
    ttl = body.get("ttl", DEFAULT_TTL)
    s = services()
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 1 <= ttl <= MAX_TTL:
        raise ApiError(400, RestCode.VALIDATION, "invalid ttl", {"ttl": f"must be a number of seconds, 1-{MAX_TTL}"})
    await stream_record(stream_id)  # 404 for a stream that does not exist
    token, expires = s.access.play_token(stream_id, ttl)
    return jsonify({"token": token, "stream_id": stream_id, "expires_at": iso(expires)}), 201
