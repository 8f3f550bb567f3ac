"""The REST error body of SPEC §3 and the handlers that make every failure use it.

`{"error": {"code", "message", "fields"?}}`; never a stack trace, never a password.
"""

from __future__ import annotations

import logging
from typing import Any

from quart import Quart, Response, g, jsonify, request
from quart.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from supervisors import ErrorCode, RestCode

from .store import StorageError

log = logging.getLogger(__name__)

Code = ErrorCode | RestCode
HTTP_CODES: dict[int, Code] = {
    400: RestCode.VALIDATION, 401: ErrorCode.UNAUTHORIZED, 404: ErrorCode.NOT_FOUND,
    405: RestCode.METHOD_NOT_ALLOWED, 412: RestCode.PRECONDITION_FAILED, 413: RestCode.TOO_LARGE,
    415: RestCode.UNSUPPORTED_MEDIA_TYPE}


class ApiError(Exception):
    def __init__(self, status: int, code: Code, message: str,
                 fields: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields
        self.headers = headers or {}


def error_body(code: Code, message: str, fields: dict[str, str] | None = None) -> dict[str, Any]:
    """The error body of SPEC §3."""
    body: dict[str, Any] = {"code": code, "message": message}
    if fields is not None:
        body["fields"] = fields
    return {"error": body}


def error_response(status: int, code: Code, message: str,
                   fields: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> ResponseReturnValue:
    return jsonify(error_body(code, message, fields)), status, headers or {}


def _body_unread() -> bool:
    """The request came with a body that nobody read to its end."""
    has_body = bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    return has_body and not g.get("body_read", False)


def install(app: Quart) -> None:
    @app.after_request
    async def _close_if_body_unread(response: Response) -> Response:
        """A response sent before the request's body was read (413, 415, 404, 405, ...)
        ends the connection: the unread rest of the body would otherwise stand where
        the client's next request on a keep-alive connection is expected, and hang it."""
        if _body_unread():
            response.headers["Connection"] = "close"
        return response

    @app.errorhandler(ApiError)
    async def _api(error: ApiError) -> ResponseReturnValue:
        return error_response(error.status, error.code, error.message, error.fields, error.headers)

    @app.errorhandler(HTTPException)
    async def _http(error: HTTPException) -> ResponseReturnValue:
        status = error.code or 500
        code = HTTP_CODES.get(status, RestCode.INTERNAL if status >= 500 else ErrorCode.BAD_REQUEST)
        headers = {}
        if isinstance(error, MethodNotAllowed) and error.valid_methods:  # RFC 9110 §15.5.6
            headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return error_response(status, code, error.description or error.name, headers=headers)

    @app.errorhandler(StorageError)
    async def _storage(error: StorageError) -> ResponseReturnValue:
        log.error("storage unavailable: %s", error)
        return error_response(503, RestCode.STORAGE_UNAVAILABLE, "storage is unavailable")

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> ResponseReturnValue:
        log.exception("unexpected error")
        return error_response(500, RestCode.INTERNAL, "internal error")
