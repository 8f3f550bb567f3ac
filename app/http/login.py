"""`POST /api/login/`, `POST /api/logout/` and `GET /api/me/`: a user signs in with a
name and password and gets a session cookie (app/accounts/sessions.py), which the page,
REST and the sockets then carry.

The cookie is HttpOnly, SameSite=Strict, Path=/, and Secure when the request came over
HTTPS (TRUSTED_PROXIES tell it behind a proxy). A wrong name and a wrong password get
the same 401 AUTH, after the same Argon2 check; too many failures for the account or the
client get 429 RATE_LIMITED with Retry-After (app/accounts/logins.py).
"""

from __future__ import annotations

from quart import Blueprint, Response, g, jsonify, request
from quart.typing import ResponseReturnValue

from supervisors import ErrorCode, RestCode

from ..accounts import COOKIE, WrongCredentials
from ..errors import ApiError
from ..policy.admission import Need, door
from ..policy.limits import Limited, over_https
from ..services import services
from .doors import audit, grant
from .streams import read_json

blueprint = Blueprint("login", __name__)


@blueprint.route("/api/login/", strict_slashes=False, methods=["POST"])
@door(Need.PUBLIC)
async def login() -> ResponseReturnValue:
    """`{"username", "password"}` → 200 `{"username", "role", "streams"}` and the cookie."""
    body = await read_json()
    if not isinstance(body, dict) or set(body) != {"username", "password"} \
            or not all(isinstance(v, str) for v in body.values()):
        raise ApiError(400, RestCode.VALIDATION, 'body must be {"username": "...", "password": "..."}',
                       {"username": "a string", "password": "a string"})
    s = services()
    try:
        user = await s.accounts.login(body["username"], body["password"], g.client_key)
    except Limited as limited:
        raise ApiError(429, ErrorCode.RATE_LIMITED, f"too many failed logins: {limited}",
                       headers={"Retry-After": limited.retry_after_header}) from None
    except WrongCredentials:
        raise ApiError(401, ErrorCode.AUTH, "wrong username or password") from None
    token = await s.accounts.sessions.open(user.name)
    audit("user.login", user.name, by=user.name)
    response: Response = jsonify(user.public())
    response.set_cookie(COOKIE, token, max_age=int(s.settings.session_max_age), path="/", httponly=True,
                        samesite="Strict", secure=_https())
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.route("/api/logout/", strict_slashes=False, methods=["POST"])
@door(Need.PUBLIC)
async def logout() -> ResponseReturnValue:
    """End the cookie's session on the server (every node), and drop the cookie: 204."""
    token = request.cookies.get(COOKIE)
    if token:
        await services().accounts.sessions.end(token)
    response = Response(b"", 204)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=_https())
    return response


@blueprint.route("/api/me/", strict_slashes=False, methods=["GET"])
@door(Need.USER)
async def me() -> ResponseReturnValue:
    """`{"username", "role", "streams"}` of who asks: a user; API_TOKEN and a server
    without access control are an admin with no name."""
    found = grant()
    assert found is not None, "the USER door lets no one in without credentials"
    return jsonify({"username": found.user, "role": "admin" if found.admin else "viewer",
                    "streams": found.streams_json()})


def _https() -> bool:
    s = services()
    return over_https(request.scheme, request.remote_addr, request.headers.get("X-Forwarded-Proto"), s.trusted)
