"""`GET /api/discover/` (admins): the ONVIF cameras on the LAN and their streams'
RTSP URLs (supervisors/camera/onvif.py), as `rtsp-viewer discover` prints them; the
viewer page's "Add from network" list. `?timeout=` seconds (0.1-10, default 3), `?user=`
and `?password=` (the devices' ONVIF credentials: never logged, never answered back),
`?probe=host:port` (default DISCOVERY_ADDRESS: the LAN's multicast group). Every address
a device names is checked against ALLOWED_SOURCES; URLs come back masked, without
credentials."""

from __future__ import annotations

from quart import Blueprint, jsonify, request
from quart.typing import ResponseReturnValue

from supervisors import HTTP_STATUS, ErrorCode, Failure, RestCode
from supervisors.camera.onvif import Credentials, discover, parse_address

from ..errors import ApiError
from ..policy.admission import Need, door
from ..services import services

blueprint = Blueprint("discover", __name__)


def _seconds() -> float:
    text = request.args.get("timeout", "3")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0.1 <= seconds <= 10:  # NaN too
        raise ApiError(400, RestCode.VALIDATION, "timeout must be 0.1-10 seconds", {"timeout": "0.1-10 seconds"})
    return seconds


@blueprint.route("/api/discover/", strict_slashes=False, methods=["GET"])
@door(Need.ADMIN)
async def discover_cameras() -> ResponseReturnValue:
    s = services()
    seconds = _seconds()
    try:
        probe = parse_address(request.args.get("probe") or s.settings.discovery_address)
    except ValueError:
        raise ApiError(400, RestCode.VALIDATION, "probe must be host:port", {"probe": "host:port"}) from None
    user = request.args.get("user")
    credentials = Credentials(user, request.args.get("password", "")) if user else None
    try:
        devices = await discover(wait=seconds, credentials=credentials, probe=probe, policy=s.settings.source_policy())
    except Failure as failure:
        raise ApiError(HTTP_STATUS[failure.code], failure.code, failure.message) from None
    except OSError:
        raise ApiError(503, ErrorCode.UNREACHABLE, "no probe could be sent (no network to send it on)") from None
    return jsonify([d.json() for d in devices])
