"""`GET /api/openapi.json`: the OpenAPI 3.1 document of the REST API (SPEC §3 and the
issues' additions), public like the page. schemathesis checks the server against it
(tests/test_openapi.py). The WebSocket protocol (SPEC §4) is in the README."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, jsonify
from quart.typing import ResponseReturnValue

from supervisors import ErrorCode, Health, RestCode, StreamPhase, Transport, VideoMode
from supervisors.profile import MAX_HEIGHT, MIN_HEIGHT

from ..accounts import COOKIE
from ..policy.admission import Need, door
from .health import APP_VERSION

blueprint = Blueprint("openapi", __name__)
# the error body's codes: REST's own (errors.py), and the stream's (the HTTP stream's errors)
REST_CODES = sorted({code.value for code in RestCode} | {code.value for code in ErrorCode})


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _errors(*statuses: int) -> dict[str, Any]:
    why = {400: "invalid input (VALIDATION, with `fields`)",
           401: "no valid credentials (UNAUTHORIZED), with API_TOKEN set or users made; a failed login (AUTH)",
           404: "no such stream or user (NOT_FOUND); a viewer's other streams are NOT_FOUND too",
           409: "a user of that name exists, or no admin would be left (CONFLICT)", 413: "body over 64 KiB (TOO_LARGE)",
           415: "body not application/json (UNSUPPORTED_MEDIA_TYPE)",
           429: "over RATE_LIMIT or the failed-login limits (RATE_LIMITED), or a stream limit (LIMIT)",
           503: "storage unavailable (STORAGE_UNAVAILABLE), or the camera (UNREACHABLE)",
           403: "the camera refused the credentials (AUTH), the source policy (FORBIDDEN), a write "
                "from an Origin that is neither this server's nor in CORS_ORIGINS, or by the session cookie "
                "without one, or a viewer user's write (FORBIDDEN)",
           412: "If-Match names another version of the stream (PRECONDITION_FAILED): nothing changed",
           502: "the camera's stream failed (STREAM_ERROR)", 504: "no media within FFMPEG_TIMEOUT (TIMEOUT)"}
    out = {}
    for status in statuses:
        headers = {"Retry-After": {"schema": {"type": "string"}}} if status == 429 else None
        if status == 401:
            headers = {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}}
        out[str(status)] = _json(_ref("Error"), why[status], headers)
    out["default"] = _json(_ref("Error"), "any other failure, with the same error body")
    return out


STREAM_ID = {"name": "stream_id", "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}}
IF_MATCH = {"name": "If-Match", "in": "header", "schema": {"type": "string"},
            "description": "the stream's ETag (or *): the change is made only if it is still at that version"}
ETAG = {"ETag": {"schema": {"type": "string"}, "description": "the stored stream's version (not its live status)"}}
NAME = {"type": "string", "minLength": 1, "maxLength": 200,
        "description": "1-200 characters after trimming; no control, zero-width or bidi characters"}
URL = {"type": "string", "minLength": 1, "maxLength": 2048,
       "description": "rtsp:// or rtsps://, a host, optional port 1-65535; no whitespace or control characters; "
                      "a password of *** keeps the stored one (same scheme, host and port only)"}
TRANSPORT = {"type": "string", "enum": [t.value for t in Transport]}
PROFILE = {  # the media profile (README: media profiles)
    "video": {"type": "string", "enum": [v.value for v in VideoMode],
              "description": "copy (default), h264 (libx264 transcode), mpeg1 (mpeg1video for JSMpeg)"},
    "audio": {"type": "boolean", "description": "carry the camera's audio as AAC (MP2 with mpeg1)"},
    "max_height": {"type": ["integer", "null"], "minimum": MIN_HEIGHT, "maximum": MAX_HEIGHT,
                   "description": "h264 and mpeg1: scale down to at most this many lines"}}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string", "enum": REST_CODES}, "message": {"type": "string"},
                       "fields": {"type": "object", "additionalProperties": {"type": "string"}}}}}},
    "StreamInput": {"type": "object", "required": ["name", "url"], "additionalProperties": False,
                    "properties": {"name": NAME, "url": URL, "transport": TRANSPORT, **PROFILE}},
    "StreamPatch": {"type": "object", "additionalProperties": False,
                    "properties": {"name": NAME, "url": URL, "transport": TRANSPORT, **PROFILE}},
    "Stream": {"type": "object", "required": ["id", "name", "url", "transport", "created_at", "updated_at", "status"],
               "properties": {
                   "id": {"type": "integer", "minimum": 1}, "name": {"type": "string"},
                   "url": {"type": "string", "description": "credentials masked as ***"},
                   "transport": TRANSPORT, **PROFILE, "created_at": {"type": "string", "format": "date-time"},
                   "updated_at": {"type": "string", "format": "date-time"}, "status": _ref("StreamStatus")}},
    "StreamStatus": {"type": "object", "required": ["phase", "viewers", "since", "error", "video", "bytes_in"],
                     "properties": {
                         "phase": {"type": "string", "enum": [p.value for p in StreamPhase]},
                         "viewers": {"type": "integer", "minimum": 0},
                         "since": {"type": ["string", "null"], "format": "date-time"},
                         "error": {"oneOf": [{"type": "null"}, {
                             "type": "object", "required": ["code", "message", "at"],
                             "properties": {"code": {"type": "string", "enum": [c.value for c in ErrorCode]},
                                            "message": {"type": "string"},
                                            "at": {"type": "string", "format": "date-time"}}}]},
                         "video": {"oneOf": [{"type": "null"}, {
                             "type": "object", "properties": {"codec": {"type": "string"},
                                                              "width": {"type": "integer"},
                                                              "height": {"type": "integer"}}}]},
                         "bytes_in": {"type": "integer", "minimum": 0}, "drops": {"type": "integer", "minimum": 0},
                         "restarts": {"type": "integer", "minimum": 0},
                         "transcoding": {"type": "boolean", "description": "the profile decodes and encodes"},
                         "cpu_percent": {"type": ["number", "null"], "minimum": 0,
                                         "description": "of one core, by this stream's FFmpeg processes"}}},
    "Health": {"type": "object", "required": ["status"], "properties": {
        "status": {"type": "string", "enum": [h.value for h in Health]}, "version": {"type": "string"},
        "ffmpeg": {"type": "object", "properties": {"path": {"type": "string"},
                                                     "version": {"type": ["string", "null"]}}},
        "streams": {"type": "object", "properties": {
            "running": {"type": "integer"}, "max": {"type": "integer"},
            "transcoding": {"type": "integer", "description": "running streams whose profile transcodes"},
            "cpu_percent": {"type": "number", "description": "of one core, by every stream's FFmpeg"}}},
        "viewers": {"type": "integer"}, "send_path": {"type": ["string", "null"], "enum": ["wire", "asgi", None]},
        "send_path_reason": {"type": "string"}, "reason": {"type": "string"}}},
    "PlayTokenRequest": {"type": "object", "additionalProperties": False,
                         "properties": {"ttl": {"type": "number", "minimum": 1, "maximum": 7 * 24 * 3600}}},
    "PlayToken": {"type": "object", "required": ["token", "stream_id", "expires_at"], "properties": {
        "token": {"type": "string"}, "stream_id": {"type": "integer"},
        "expires_at": {"type": "string", "format": "date-time"}}},
}
SCHEMAS |= {
    "Login": {"type": "object", "required": ["username", "password"], "additionalProperties": False,
              "properties": {"username": {"type": "string"}, "password": {"type": "string"}}},
    "Me": {"type": "object", "required": ["username", "role", "streams"], "properties": {
        "username": {"type": ["string", "null"], "description": "null: API_TOKEN, or no access control"},
        "role": {"type": "string", "enum": ["admin", "viewer"]},
        "streams": {"oneOf": [{"type": "array", "items": {"type": "integer"}}, {"const": "all"}]}}},
    "User": {"type": "object", "required": ["username", "role", "streams", "created_at", "updated_at"],
             "properties": {"username": {"type": "string"}, "role": {"type": "string", "enum": ["admin", "viewer"]},
                            "streams": {"oneOf": [{"type": "array", "items": {"type": "integer"}}, {"const": "all"}]},
                            "created_at": {"type": "string", "format": "date-time"},
                            "updated_at": {"type": "string", "format": "date-time"}}},
    "UserInput": {"type": "object", "required": ["username", "password", "role"], "additionalProperties": False,
                  "properties": {
                      "username": {"type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$",
                                   "description": "kept in lower case: Ada and ada are one user"},
                      "password": {"type": "string", "minLength": 8, "maxLength": 1024},
                      "role": {"type": "string", "enum": ["admin", "viewer"]},
                      "streams": {"oneOf": [{"type": "array", "items": {"type": "integer", "minimum": 1,
                                                                          "maximum": 2**63 - 1}},
                                            {"const": "all"}], "description": "what a viewer watches"}}},
    "UserPatch": {"type": "object", "additionalProperties": False, "properties": {
        "password": {"type": "string", "minLength": 8, "maxLength": 1024,
                     "description": "ends the user's sessions on every node"},
        "role": {"type": "string", "enum": ["admin", "viewer"]},
        "streams": {"oneOf": [{"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}},
                              {"const": "all"}]}}},
}
SCHEMAS |= {
    "Device": {"type": "object", "required": ["name", "address", "xaddr", "profiles", "error"], "properties": {
        "name": {"type": "string"}, "address": {"type": "string"}, "xaddr": {"type": "string"},
        "error": {"type": ["string", "null"], "description": "why its profiles could not be read"},
        "profiles": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "token": {"type": "string"},
            "width": {"type": ["integer", "null"]}, "height": {"type": ["integer", "null"]},
            "url": {"type": ["string", "null"], "description": "RTSP, masked, without credentials"},
            "error": {"type": ["string", "null"]}}}}}},
}
# {}: no API_TOKEN and no user
SECURED: list[dict[str, list[str]]] = [{"bearer": []}, {"basic": []}, {"session": []}, {}]
USER_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}


def _users() -> dict[str, Any]:
    one = [USER_NAME]
    user_body = {"required": True, "content": {"application/json": {"schema": _ref("UserInput")}}}
    patch_body = {"required": True, "content": {"application/json": {"schema": _ref("UserPatch")}}}
    return {
        "/api/login/": {"post": {
            "operationId": "login", "security": [{}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Login")}}},
            "summary": "sign in: an HttpOnly, SameSite=Strict session cookie (Secure over HTTPS)",
            "responses": {"200": _json(_ref("Me"), "signed in", {"Set-Cookie": {"schema": {"type": "string"}}}),
                          **_errors(400, 401, 403, 413, 415, 429, 503)}}},
        "/api/logout/": {"post": {"operationId": "logout", "security": [{}], "summary": "end the cookie's session",
                                  "responses": {"204": {"description": "signed out"}, **_errors(403, 429, 503)}}},
        "/api/me/": {"get": {"operationId": "me", "responses": {"200": _json(_ref("Me"), "who asks"),
                                                               **_errors(401, 429, 503)}}},
        "/api/users/": {
            "get": {"operationId": "listUsers", "responses": {
                "200": _json({"type": "array", "items": _ref("User")}, "users by name"),
                **_errors(401, 403, 429, 503)}},
            "post": {"operationId": "createUser", "requestBody": user_body, "responses": {
                "201": _json(_ref("User"), "created", {"Location": {"schema": {"type": "string"}}}),
                **_errors(400, 401, 403, 409, 413, 415, 429, 503)}}},
        "/api/users/{name}/": {
            "get": {"operationId": "getUser", "parameters": one, "responses": {
                "200": _json(_ref("User"), "the user"), **_errors(401, 403, 404, 429, 503)}},
            "patch": {"operationId": "patchUser", "parameters": one, "requestBody": patch_body, "responses": {
                "200": _json(_ref("User"), "changed"), **_errors(400, 401, 403, 404, 409, 413, 415, 429, 503)}},
            "delete": {"operationId": "deleteUser", "parameters": one, "responses": {
                "204": {"description": "removed; its sessions end on every node"},
                **_errors(401, 403, 404, 409, 429, 503)}}},
    }


def document() -> dict[str, Any]:
    stream_body = {"required": True, "content": {"application/json": {"schema": _ref("StreamInput")}}}
    patch_body = {"required": True, "content": {"application/json": {"schema": _ref("StreamPatch")}}}
    one = [STREAM_ID]
    return {
        "openapi": "3.1.0",
        "info": {"title": "RTSP Stream Viewer", "version": APP_VERSION,
                 "description": "REST API of the RTSP stream viewer backend. Media and status go over the "
                                "WebSocket /ws/stream (see the README)."},
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "API_TOKEN (everything), or a play token (GET .../stream.ts of its stream only)"},
            "basic": {"type": "http", "scheme": "basic", "description": "a user's name and password"},
            "session": {"type": "apiKey", "in": "cookie", "name": COOKIE,
                        "description": "POST /api/login/; its writes need the page's Origin"}}},
        "security": SECURED,
        "paths": {
            "/api/health/": {"get": {"operationId": "health", "security": [{}],
                                     "summary": "status; paths and versions only with the token (if one is set)",
                                     "responses": {"200": _json(_ref("Health"), "serving"),
                                                   "503": _json(_ref("Health"), "degraded, with a reason")}}},
            "/api/streams/": {
                "get": {"operationId": "listStreams", "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0,
                                                                 "maximum": 2**63 - 1}}],
                    "responses": {"200": _json({"type": "array", "items": _ref("Stream")}, "streams by id"),
                                  **_errors(400, 401, 429, 503)}},
                "post": {"operationId": "createStream", "requestBody": stream_body,
                         "responses": {"201": {**_json(_ref("Stream"), "created", {
                             "Location": {"schema": {"type": "string"}, "required": True}, **ETAG}), "links": {
                             name: {"operationId": operation, "parameters": {"stream_id": "$response.body#/id"}}
                             for name, operation in (("GetStream", "getStream"), ("PatchStream", "patchStream"),
                                                     ("DeleteStream", "deleteStream"),
                                                     ("CreatePlayToken", "createPlayToken"))}},
                             **_errors(400, 401, 403, 413, 415, 429, 503)}}},
            "/api/streams/{stream_id}/": {
                "get": {"operationId": "getStream", "parameters": one,
                        "responses": {"200": _json(_ref("Stream"), "the stream", ETAG), **_errors(401, 404, 429, 503)}},
                "patch": {"operationId": "patchStream", "parameters": [*one, IF_MATCH], "requestBody": patch_body,
                          "responses": {"200": _json(_ref("Stream"), "updated (only the fields sent); a running "
                                                     "upstream restarts on a new source", ETAG),
                                        **_errors(400, 401, 403, 404, 412, 413, 415, 429, 503)}},
                "delete": {"operationId": "deleteStream", "parameters": [*one, IF_MATCH],
                           "responses": {"204": {"description": "deleted; its viewers get NOT_FOUND"},
                                         **_errors(401, 403, 404, 412, 429, 503)}}},
            "/api/streams/{stream_id}/play-token": {
                "post": {"operationId": "createPlayToken", "parameters": one,
                         "requestBody": {"content": {"application/json": {"schema": _ref("PlayTokenRequest")}}},
                         "responses": {"201": _json(_ref("PlayToken"), "a token that watches this stream"),
                                       **_errors(400, 401, 403, 404, 413, 415, 429, 503)}}},
            "/api/streams/{stream_id}/stream.ts": {
                "get": {"operationId": "streamTs", "parameters": [*one, {
                    "name": "token", "in": "query", "schema": {"type": "string"},
                    "description": "API_TOKEN or a play token, for players that cannot set headers"}],
                    "responses": {"200": {"description": "live MPEG-TS, chunked, until the client leaves",
                                          "content": {"video/mp2t": {"schema": {"type": "string",
                                                                                "format": "binary"}}}},
                                  **_errors(401, 404, 429, 503)}}},
            "/api/streams/{stream_id}/stream.mp4": {
                "get": {"operationId": "streamMp4", "parameters": [*one, {
                    "name": "token", "in": "query", "schema": {"type": "string"},
                    "description": "API_TOKEN or a play token, for players that cannot set headers"}],
                    "summary": "fragmented MP4: init segment, then a fragment per frame from a keyframe on",
                    "responses": {"200": {"description": "live fMP4, chunked, until the client leaves",
                                          "content": {"video/mp4": {"schema": {"type": "string",
                                                                               "format": "binary"}}}},
                                  **_errors(400, 401, 404, 429, 503)}}},
            "/api/streams/{stream_id}/snapshot.jpg": {
                "get": {"operationId": "snapshot", "parameters": [*one, {
                    "name": "width", "in": "query", "schema": {"type": "integer", "minimum": 16, "maximum": 4096},
                    "description": "pixels; the height keeps the aspect ratio"}, {
                    "name": "token", "in": "query", "schema": {"type": "string"},
                    "description": "API_TOKEN or a play token, for <img> and <video poster>"}],
                    "summary": "the latest keyframe as a JPEG: from the running upstream, else a brief "
                               "connection within FFMPEG_TIMEOUT",
                    "responses": {"200": {"description": "a JPEG", "content": {"image/jpeg": {
                        "schema": {"type": "string", "format": "binary"}}}},
                                  **_errors(400, 401, 403, 404, 429, 502, 503, 504)}}},
            **_users(),
            "/api/discover/": {"get": {
                "operationId": "discover", "summary": "ONVIF cameras on the LAN and their RTSP URLs (WS-Discovery)",
                "parameters": [
                    {"name": "timeout", "in": "query", "schema": {"type": "number", "minimum": 0.1, "maximum": 10}},
                    {"name": "user", "in": "query", "schema": {"type": "string"}},
                    {"name": "password", "in": "query", "schema": {"type": "string"}},
                    {"name": "probe", "in": "query", "schema": {"type": "string"},
                     "description": "host:port to probe (default DISCOVERY_ADDRESS)"}],
                "responses": {"200": _json({"type": "array", "items": _ref("Device")}, "the devices that answered"),
                              **_errors(400, 401, 403, 429, 503)}}},
            "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics (text format 0.0.4); "
                                 "behind METRICS_TOKEN or API_TOKEN when one is set",
                                 "responses": {"200": {"description": "the metrics", "content": {"text/plain": {
                                     "schema": {"type": "string"}}}}, **_errors(401, 403, 429)}}},
        },
    }


@blueprint.route("/api/openapi.json", methods=["GET"])
@door(Need.PUBLIC)
async def openapi() -> ResponseReturnValue:
    return jsonify(document())
