"""`/api/users/` (admins): the users of app/accounts/ over REST, as `rtsp-viewer users`
manages them on the server's machine. A user's JSON is `{"username", "role", "streams",
"created_at", "updated_at"}`, never its password or hash; each change writes an audit
line."""

from __future__ import annotations

from quart import Blueprint, jsonify
from quart.typing import ResponseReturnValue

from supervisors import ErrorCode, RestCode

from ..accounts import Change, InvalidUser, LastAdmin, Role, User, UserExists, role_of, stream_ids, user_name
from ..accounts.passwords import MAX_LENGTH, MIN_LENGTH, WeakPassword
from ..errors import ApiError
from ..policy.admission import Need, door
from ..services import services
from ..store import now_iso
from .doors import audit
from .streams import read_json

blueprint = Blueprint("users", __name__)
FIELDS = {"username", "password", "role", "streams"}


def user_json(user: User) -> dict[str, object]:
    return {**user.public(), "created_at": user.created_at, "updated_at": user.updated_at}


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(400, RestCode.VALIDATION, f"invalid {field}: {message}", {field: message})


async def _body(allowed: set[str]) -> dict[str, object]:
    body = await read_json()
    if not isinstance(body, dict):
        raise _invalid("body", "must be a JSON object")
    if unknown := sorted(set(body) - allowed):
        raise _invalid(unknown[0], "unknown field")
    return body


async def _password(value: object) -> str:
    if not isinstance(value, str):
        raise _invalid("password", "must be a string")
    try:
        return await services().accounts.passwords.hash(value)
    except WeakPassword:
        raise _invalid("password", f"must be {MIN_LENGTH}-{MAX_LENGTH} characters") from None


def _checked(invalid: InvalidUser) -> ApiError:
    return _invalid(invalid.field, invalid.message)


def _name(name: str) -> str:
    try:
        return user_name(name)
    except InvalidUser:
        raise ApiError(404, ErrorCode.NOT_FOUND, "no such user") from None


@blueprint.route("/api/users/", strict_slashes=False, methods=["GET"])
@door(Need.ADMIN)
async def list_users() -> ResponseReturnValue:
    return jsonify([user_json(u) for u in await services().accounts.users.all()])


@blueprint.route("/api/users/", strict_slashes=False, methods=["POST"])
@door(Need.ADMIN)
async def create_user() -> ResponseReturnValue:
    """`{"username", "password", "role", "streams"}` (streams: ids or "all"; a viewer's
    default is none) → 201; 409 CONFLICT if the name is taken."""
    body = await _body(FIELDS)
    for field in ("username", "password", "role"):
        if field not in body:
            raise _invalid(field, "required")
    try:
        name, role = user_name(body["username"]), role_of(body["role"])
        streams = stream_ids(body.get("streams", []))  # checked for an admin too, though it watches all
        streams = None if role is Role.ADMIN else streams
    except InvalidUser as invalid:
        raise _checked(invalid) from None
    s = services()
    try:
        user = await s.accounts.users.add(name, role, streams, await _password(body["password"]), now_iso())
    except UserExists:
        raise ApiError(409, RestCode.CONFLICT, f"user {name} exists") from None
    s.accounts.created()
    audit("user.create", name, ["role", "streams"])
    return jsonify(user_json(user)), 201, {"Location": f"/api/users/{name}/"}


@blueprint.route("/api/users/<name>/", strict_slashes=False, methods=["GET"])
@door(Need.ADMIN)
async def get_user(name: str) -> ResponseReturnValue:
    user = await services().accounts.users.get(_name(name))
    if user is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, "no such user")
    return jsonify(user_json(user))


@blueprint.route("/api/users/<name>/", strict_slashes=False, methods=["PATCH"])
@door(Need.ADMIN)
async def patch_user(name: str) -> ResponseReturnValue:
    """Any of `{"password", "role", "streams"}`. A new password ends the user's sessions
    on every node; 409 CONFLICT if no admin would be left."""
    body = await _body(FIELDS - {"username"})
    try:
        change = Change(role=role_of(body["role"]) if "role" in body else None,
                        set_streams="streams" in body, streams=stream_ids(body.get("streams", [])))
    except InvalidUser as invalid:
        raise _checked(invalid) from None
    if "password" in body:
        change.password_hash = await _password(body["password"])
    try:
        user = await services().accounts.users.change(_name(name), change, now_iso())
    except InvalidUser as invalid:
        raise _checked(invalid) from None
    except LastAdmin as last:
        raise ApiError(409, RestCode.CONFLICT, str(last)) from None
    if user is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, "no such user")
    audit("user.password" if "password" in body else "user.update", user.name, sorted(body))
    return jsonify(user_json(user))


@blueprint.route("/api/users/<name>/", strict_slashes=False, methods=["DELETE"])
@door(Need.ADMIN)
async def delete_user(name: str) -> ResponseReturnValue:
    """204; its sessions end on every node. 409 CONFLICT for the last admin (removing it
    would leave its users unmanaged, or, with no user left, the server open: only
    `rtsp-viewer users remove` on the server's machine may)."""
    try:
        removed = await services().accounts.users.remove(_name(name))
    except LastAdmin as last:
        raise ApiError(409, RestCode.CONFLICT, str(last)) from None
    if not removed:
        raise ApiError(404, ErrorCode.NOT_FOUND, "no such user")
    audit("user.delete", name.lower())
    return "", 204
