"""The HTTP side of the policy: every request passes `app.policy.admission.admit` through
its route's door before its view runs (`install`), the app refuses to start with a route
that declares none (`check_doors`), and CORS headers go on the answers the policy allows
(`install_cors`)."""

from __future__ import annotations

from quart import Quart, Response, g, request

from ..accounts.sessions import COOKIE
from ..errors import ApiError
from ..logs import audit as audit_line
from ..policy.admission import NO_ROUTE, OPEN, PREFLIGHT, Admitted, Knock, Refused, admit, door_of, who
from ..policy.origins import ALLOW_HEADERS, ALLOW_METHODS, ANY, PREFLIGHT_MAX_AGE, Policy
from ..policy.tokens import Grant, basic, bearer
from ..services import Services, services


def refusal(refused: Refused) -> ApiError:
    """The error body of a refusal."""
    return ApiError(refused.status, refused.code, refused.message, headers=refused.headers)


def install(app: Quart, s: Services) -> None:
    """Every HTTP request passes `admit` through its route's door before its view runs:
    `g.client` and `g.client_key` say who asks, `g.admitted` what it was let in with (and
    `g.knock` with which credentials, for a response that outlives the request); a
    refusal is the error body. The connection share of a door that holds one is given
    back when the request ends, unless the view took it (`Admitted.handover`)."""

    @app.before_request
    async def _admit() -> None:
        view = app.view_functions.get(request.endpoint) if request.endpoint else None
        chosen = PREFLIGHT if request.method == "OPTIONS" else door_of(view) or NO_ROUTE
        authorization = request.headers.get("Authorization")
        token = bearer(authorization)
        if token is None and chosen.query_token:
            token = request.args.get("token")
        knock = Knock(socket=False, method=request.method, host=request.headers.get("Host"),
                      origin=request.headers.get("Origin"), peer=request.remote_addr,
                      forwarded_for=tuple(request.headers.getlist("X-Forwarded-For")), token=token,
                      basic=basic(authorization), session=request.cookies.get(COOKIE) or None,
                      stream_id=(request.view_args or {}).get("stream_id"))
        decision = await admit(chosen, knock, s)
        g.client, g.client_key = decision.client, decision.key
        if isinstance(decision, Refused):
            raise refusal(decision)
        g.admitted, g.knock = decision, knock

    @app.teardown_request
    async def _release(_: BaseException | None) -> None:
        admitted: Admitted | None = g.get("admitted")
        if admitted is not None:
            admitted.release()


def check_doors(app: Quart) -> None:
    """Every route the app registers declares its door; raises RuntimeError naming one
    that does not (a new route cannot forget who may enter)."""
    for rule in app.url_map.iter_rules():
        if door_of(app.view_functions.get(rule.endpoint)) is None:
            raise RuntimeError(f"route {rule.rule} ({rule.endpoint}) declares no door (app/policy/admission.py)")


async def is_admin() -> bool:
    """The request came with API_TOKEN or an admin's session cookie, or none is needed; on
    a public door it is looked up only now (`admission.who`), when a route asks: not for
    every static file."""
    found = grant()
    if found is None and (knock := g.get("knock")) is not None:
        found = await who(knock, services())
    return found is not None and found.admin


def grant() -> Grant | None:
    """What the request's credentials allow (None: nothing, or a public door)."""
    admitted: Admitted | None = g.get("admitted")
    return None if admitted is None else admitted.grant


def actor() -> str:
    """Who the request's credentials say asks, for the audit log."""
    found = grant()
    if found is None or found is OPEN:
        return "anyone"
    return found.user or ("api-token" if found.admin else "play-token")


def audit(action: str, target: str, fields: list[str] | None = None, *, by: str | None = None) -> None:
    """The audit line of a change this request made (`app.logs.audit`), by whom its
    credentials say (or `by`)."""
    audit_line(action, target, actor=by or actor(), client=g.get("client"), fields=fields)


def install_cors(app: Quart, policy: Policy) -> None:
    """CORS headers on every response to an allowed cross-origin request; preflights
    (OPTIONS with Access-Control-Request-Method) answered 204."""

    @app.before_request
    async def _preflight() -> Response | None:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return Response(b"", 204)
        return None

    @app.after_request
    async def _cors(response: Response) -> Response:
        response.vary.add("Origin")
        origin = request.headers.get("Origin")
        if origin is None or not policy.cors_allows(origin):
            return response
        if ANY in policy.cors:
            response.headers["Access-Control-Allow-Origin"] = ANY
        else:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        else:
            response.headers["Access-Control-Expose-Headers"] = "Location, Retry-After"
        return response
