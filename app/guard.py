"""Access control at the web edge (app/access.py decides, this applies it).

Before every HTTP request: the presented token is checked once (`g.grant`); a route other
than PUBLIC answers 401 UNAUTHORIZED (`WWW-Authenticate: Bearer`) without the admin token,
except the HTTP stream and the snapshot (WATCHING), which a play token for their stream
opens too. WebSockets check in `app/ws.py` (`socket_grant`), before anything starts.
`POST /api/streams/{id}/play-token` hands out play tokens.
"""

from __future__ import annotations

from quart import Blueprint, Quart, g, jsonify, request
from quart.typing import ResponseReturnValue
from werkzeug.datastructures import MultiDict

from supervisors import ErrorCode

from .access import MAX_TTL, Access, Grant, bearer, from_protocols
from .errors import ApiError
from .services import services
from .sockets import Socket
from .store import iso
from .streams import read_json, stream_record

blueprint = Blueprint("guard", __name__)
# the page asks for the token itself; /metrics checks METRICS_TOKEN or API_TOKEN itself; a
# socket's path over plain HTTP only says it is a socket's (the socket checks its token)
PUBLIC = frozenset({"health.health", "page.index", "page.static", "openapi.openapi", "metrics.metrics",
                    "ws.not_a_websocket"})
# what a play token for a stream opens, besides its sockets; players and <video poster>
# cannot set headers, so these also take the token as ?token=
WATCHING = frozenset({"stream_http.stream_ts", "stream_http.stream_mp4", "snapshot.snapshot"})
DEFAULT_TTL = 300


def unauthorized(message: str) -> ApiError:
    return ApiError(401, ErrorCode.UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})


def install(app: Quart, access: Access) -> None:
    @app.before_request
    async def _authenticate() -> None:
        presented = bearer(request.headers.get("Authorization"))
        if presented is None and request.endpoint in WATCHING:
            presented = request.args.get("token")  # players cannot set headers
        grant = g.grant = access.check(presented)
        if request.endpoint in PUBLIC or request.endpoint is None or request.method == "OPTIONS":
            return  # public, no such route (404), or a CORS preflight (never carries credentials)
        if grant is None:
            raise unauthorized("a valid token is required (Authorization: Bearer <API_TOKEN>)")
        if not grant.admin:
            stream_id = (request.view_args or {}).get("stream_id")
            if request.endpoint not in WATCHING or not grant.may_watch(stream_id):
                raise unauthorized(f"this play token only watches stream {grant.stream_id}")


def is_admin() -> bool:
    """The request came with the admin token (or none is needed)."""
    grant: Grant | None = g.get("grant")
    return grant is not None and grant.admin


def socket_grant(access: Access, socket: Socket, args: MultiDict[str, str]) -> tuple[Grant | None, str | None]:
    """The grant of this WebSocket's token (`?token=` in `args`, Authorization, or a
    `bearer.<token>` subprotocol) and the subprotocol to accept it with."""
    token, protocol = from_protocols(socket.header("Sec-WebSocket-Protocol"))
    presented = args.get("token") or bearer(socket.header("Authorization")) or token
    return access.check(presented), protocol


@blueprint.route("/api/streams/<stream_id:stream_id>/play-token", strict_slashes=False, methods=["POST"])
async def play_token(stream_id: int) -> ResponseReturnValue:
    """`{"ttl": seconds}` (1 … a week, default 300) → `{"token", "stream_id", "expires_at"}`:
    a token that watches this stream, and nothing else, until it expires."""
    body = await read_json() if request.content_length or request.mimetype else {}
    if not isinstance(body, dict) or set(body) - {"ttl"}:
        raise ApiError(400, "VALIDATION", "body must be {\"ttl\": seconds}", {"ttl": "the only field"})
    ttl = body.get("ttl", DEFAULT_TTL)
    s = services()
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 1 <= ttl <= MAX_TTL:
        raise ApiError(400, "VALIDATION", "invalid ttl", {"ttl": f"must be a number of seconds, 1-{MAX_TTL}"})
    await stream_record(stream_id)  # 404 for a stream that does not exist
    token, expires = s.access.play_token(stream_id, ttl)
    return jsonify({"token": token, "stream_id": stream_id, "expires_at": iso(expires)}), 201
