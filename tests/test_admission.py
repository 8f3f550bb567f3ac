"""One admission path for every route: the table of who may enter, walked over every route
the app registers (read from the app, not a hand list) and both media sockets, under each
condition a stranger can bring and as each role of user (by `Authorization: Basic`),
through the real server and a real camera."""

from __future__ import annotations

import base64
import json
from contextlib import AsyncExitStack

import attrs
import httpx
import pytest
import trio
import trio_websocket

from app.factory import create_app
from app.http.doors import check_doors
from app.policy.admission import Need, door_of
from app.settings import Settings
from app.sockets.session import DOOR as SOCKET_DOOR
from app.sockets.session import PATHS as SOCKET_PATHS
from supervisors import HTTP_STATUS
from tests.camera import Camera
from tests.helpers import Server, start_server

TOKEN = "admin-token-0123456789abcdef"
PASSWORD = "correct horse battery"
ADMIN_USER, VIEWER, OTHER_VIEWER = "ada", "vera", "otto"  # otto watches only the other stream
BURST = 60.0
UNSAFE = {"POST", "PATCH", "DELETE"}


@attrs.frozen
class Route:
    """What the table expects of one route: who it is for, whether RATE_LIMIT and the
    connection cap apply, and what success looks like."""

    need: Need
    ok: int
    rate: bool = True
    holds: bool = False
    ok_code: str | None = None  # the error code of its success, for the sockets' paths over HTTP


# every route the app registers, by (rule, method); a new route without a line here fails
ROUTES: dict[tuple[str, str], Route] = {
    ("/api/health/", "GET"): Route(Need.PUBLIC, 200, rate=False),
    ("/api/login/", "POST"): Route(Need.PUBLIC, 200),
    ("/api/logout/", "POST"): Route(Need.PUBLIC, 204),
    ("/api/me/", "GET"): Route(Need.USER, 200),
    ("/api/users/", "GET"): Route(Need.ADMIN, 200),
    ("/api/users/", "POST"): Route(Need.ADMIN, 201),
    ("/api/users/<name>/", "GET"): Route(Need.ADMIN, 200),
    ("/api/users/<name>/", "PATCH"): Route(Need.ADMIN, 200),
    ("/api/users/<name>/", "DELETE"): Route(Need.ADMIN, 204),
    ("/", "GET"): Route(Need.PUBLIC, 200),
    ("/static/<path:name>", "GET"): Route(Need.PUBLIC, 200, rate=False),
    ("/api/openapi.json", "GET"): Route(Need.PUBLIC, 200),
    ("/metrics", "GET"): Route(Need.METRICS, 200),
    # plain HTTP to a socket's path: "this is a WebSocket endpoint"
    ("/ws/stream", "GET"): Route(Need.PUBLIC, 400, ok_code="BAD_REQUEST"),
    ("/ws/stream.ts", "GET"): Route(Need.PUBLIC, 400, ok_code="BAD_REQUEST"),
    ("/api/cluster/", "GET"): Route(Need.ADMIN, 200),
    ("/api/discover/", "GET"): Route(Need.ADMIN, 200),
    ("/api/streams/", "GET"): Route(Need.USER, 200),
    ("/api/streams/", "POST"): Route(Need.ADMIN, 201),
    ("/api/streams/<stream_id:stream_id>/", "GET"): Route(Need.USER, 200),
    ("/api/streams/<stream_id:stream_id>/", "PATCH"): Route(Need.ADMIN, 200),
    ("/api/streams/<stream_id:stream_id>/", "DELETE"): Route(Need.ADMIN, 204),
    ("/api/streams/<stream_id:stream_id>/play-token", "POST"): Route(Need.USER, 201),
    ("/api/streams/<stream_id:stream_id>/snapshot.jpg", "GET"): Route(Need.WATCH, 200),
    ("/api/streams/<stream_id:stream_id>/stream.ts", "GET"): Route(Need.WATCH, 200, holds=True),
    ("/api/streams/<stream_id:stream_id>/stream.mp4", "GET"): Route(Need.WATCH, 200, holds=True),
}
SOCKETS = {path: Route(Need.WATCH, 0, holds=True) for path in ("/ws/stream", "/ws/stream.ts")}
CONDITIONS = ("baseline", "no token", "wrong token", "play token for another stream", "foreign Origin",
              "foreign Host", "over the rate", "over the connection cap", "admin user", "viewer of the stream",
              "viewer of another stream")
USERS = {"admin user": ADMIN_USER, "viewer of the stream": VIEWER, "viewer of another stream": OTHER_VIEWER}


def expected(route: Route, method: str, condition: str, *, socket: bool = False,
             names_stream: bool = True) -> tuple[int, str | None]:
    """The one answer for a route under a condition: (HTTP status, error code); its own
    success when it is let in. A viewer may not change anything (403), and a stream not
    granted to it does not exist for it (404, the answer for a stream that is not there)."""
    if condition == "foreign Host":
        return 400, "BAD_REQUEST"
    if condition == "over the rate" and route.rate:
        return 429, "RATE_LIMITED"
    if condition == "foreign Origin" and (socket or method in UNSAFE):
        return 403, "FORBIDDEN"
    if condition in ("no token", "wrong token", "play token for another stream") and route.need is not Need.PUBLIC:
        return 401, "UNAUTHORIZED"
    if condition.startswith("viewer") and route.need in (Need.ADMIN, Need.METRICS):
        return 403, "FORBIDDEN"
    if condition == "viewer of another stream" and route.need in (Need.USER, Need.WATCH) and names_stream:
        return 404, "NOT_FOUND"
    if condition == "over the connection cap" and route.holds:
        return 429, "LIMIT"
    return route.ok, route.ok_code


def test_every_registered_route_declares_the_door_the_table_expects() -> None:
    """Read from the app: every rule has a line in the table, its declared door says the
    same, and the sockets' door too. An app with a route that declares none will not
    even start (check_doors)."""
    app = create_app(Settings(database_url="sqlite:///:memory:"))
    seen = set()
    for rule in app.url_map.iter_rules():
        declared = door_of(app.view_functions[rule.endpoint])
        assert declared is not None, rule.rule
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            route = ROUTES.get((rule.rule, method))
            assert route is not None, f"{method} {rule.rule} is not in the admission table"
            assert (declared.need, declared.rate, declared.holds) == (route.need, route.rate, route.holds), rule.rule
            seen.add((rule.rule, method))
    assert seen == set(ROUTES)
    assert set(SOCKET_PATHS) == set(SOCKETS)
    assert (SOCKET_DOOR.need, SOCKET_DOOR.holds) == (Need.WATCH, True)

    @app.route("/api/forgotten")
    async def forgotten() -> str:
        return "no door"

    with pytest.raises(RuntimeError, match="/api/forgotten"):
        check_doors(app)


@attrs.define
class Rig:
    server: Server
    camera_stream: int
    other_stream: int
    play_other: str  # a play token for other_stream
    port: int
    clients: int = 0

    def new_client(self) -> str:
        """An address of its own (through the trusted proxy): its own rate bucket and cap."""
        self.clients += 1
        return f"198.51.100.{self.clients}"

    def admin(self, client: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=20,
                                 headers={"Authorization": f"Bearer {TOKEN}", "X-Forwarded-For": client})


def credentials(rig: Rig, condition: str) -> str | None:
    """The `Authorization` header of the condition."""
    if condition in USERS:
        return "Basic " + base64.b64encode(f"{USERS[condition]}:{PASSWORD}".encode()).decode()
    token = {"no token": None, "wrong token": "wrong-token-0123456789abcdef",
             "play token for another stream": rig.play_other}.get(condition, TOKEN)
    return None if token is None else f"Bearer {token}"


def sample(rig: Rig, rule: str, method: str, condition: str, scratch: int) -> tuple[str, dict[str, object] | None]:
    """A request to `rule` that succeeds when it is let in: (path, JSON body)."""
    stream = scratch if method == "DELETE" else rig.camera_stream
    path = rule.replace("<stream_id:stream_id>", str(stream)).replace("<path:name>", "viewer.js")
    path = path.replace("<name>", f"scratch-{scratch}")
    if rule == "/api/discover/":  # a probe to a loopback port nobody answers on: never the LAN
        path += "?probe=127.0.0.1:9&timeout=0.1"
    bodies: dict[tuple[str, str], dict[str, object]] = {
        ("/api/streams/", "POST"): {"name": f"new {condition}", "url": "rtsp://127.0.0.1:9/x"},
        ("/api/streams/<stream_id:stream_id>/", "PATCH"): {"name": f"renamed {condition}"},
        ("/api/streams/<stream_id:stream_id>/play-token", "POST"): {"ttl": 60},
        ("/api/login/", "POST"): {"username": VIEWER, "password": PASSWORD},
        ("/api/users/", "POST"): {"username": f"new-{scratch}", "password": PASSWORD, "role": "viewer"},
        ("/api/users/<name>/", "PATCH"): {"streams": [rig.camera_stream]},
    }
    return path, bodies.get((rule, method))


async def http_answer(rig: Rig, client: str, condition: str, method: str, path: str,
                      body: dict[str, object] | None) -> tuple[int, str | None]:
    """(status, the error body's code or None)."""
    headers = {"X-Forwarded-For": client}
    if (authorization := credentials(rig, condition)) is not None:
        headers["Authorization"] = authorization
    if condition == "foreign Origin":
        headers["Origin"] = "https://evil.example"
    if condition == "foreign Host":
        headers["Host"] = "evil.example"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rig.port}", timeout=30) as http, \
            http.stream(method, path, json=body, headers=headers) as response:
        if response.headers.get("content-type") == "application/json" and response.status_code >= 400:
            await response.aread()
            return response.status_code, response.json()["error"]["code"]
        return response.status_code, None


async def socket_answer(rig: Rig, client: str, condition: str, path: str) -> tuple[int, str | None]:
    """(0, None) for a socket that is let in (`connected`, or media on /ws/stream.ts);
    (403/401/429, code) for one refused after the handshake, its error, close code and
    reason checked; (400, code) for a refused handshake."""
    query = f"id={rig.camera_stream}"
    headers = [("X-Forwarded-For", client)]
    if (authorization := credentials(rig, condition)) is not None and condition in USERS:
        headers.append(("Authorization", authorization))
    elif authorization is not None:
        query += f"&token={authorization.removeprefix('Bearer ')}"
    if condition == "foreign Host":
        return await raw_handshake(rig, f"{path}?{query}", client)
    if condition == "foreign Origin":
        headers.append(("Origin", "https://evil.example"))
    texts: list[str] = []
    async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{rig.port}{path}?{query}",
                                                 extra_headers=headers) as ws:
        try:
            with trio.fail_after(20):
                while True:
                    message = await ws.get_message()
                    if isinstance(message, bytes) or '"connected"' in message:
                        return 0, None
                    texts.append(message)
        except trio_websocket.ConnectionClosed as closed:
            close = closed.reason
        finally:
            with trio.CancelScope(shield=True):
                await ws._stream.aclose()
    if path == "/ws/stream":  # the error, then 1008
        assert close.code == 1008 and len(texts) == 1, (close, texts)
        code = json.loads(texts[0])["code"]
        return HTTP_STATUS[code], code
    assert not texts and close.code == 4000 + HTTP_STATUS[close.reason], close  # 4000 + status, the code as reason
    return HTTP_STATUS[close.reason], close.reason


async def raw_handshake(rig: Rig, target: str, client: str) -> tuple[int, str | None]:
    async with await trio.open_tcp_stream("127.0.0.1", rig.port) as stream:
        await stream.send_all((f"GET {target} HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-For: {client}\r\n"
                               "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some():
                data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, "BAD_REQUEST" if b'"BAD_REQUEST"' in data else None




async def prepare(rig: Rig, condition: str, stack: AsyncExitStack) -> str:
    """A client for the condition: its bucket spent for "over the rate", a socket of its
    own held open for "over the connection cap" (MAX_CONNECTIONS_PER_CLIENT is 1)."""
    client = rig.new_client()
    if condition == "over the rate":
        async with rig.admin(client) as http:
            while (await http.get("/api/openapi.json")).status_code != 429:
                pass
    if condition == "over the connection cap":
        ws = await stack.enter_async_context(trio_websocket.open_websocket_url(
            f"ws://127.0.0.1:{rig.port}/ws/stream?id={rig.camera_stream}&token={TOKEN}",
            extra_headers=[("X-Forwarded-For", client)]))
        assert '"connected"' in str(await ws.get_message())
    return client


async def test_one_door_answers_every_route_under_every_condition(nursery: trio.Nursery) -> None:
    camera = Camera()
    await nursery.start(camera.run)
    server = await start_server(nursery, api_token=TOKEN, trusted_proxies=("127.0.0.1/32",),
                                rate_limit=(0.01, BURST), max_connections_per_client=1, linger=60)
    port = int(server.base.rsplit(":", 1)[1])
    rig = Rig(server, 0, 0, "", port)
    async with rig.admin(rig.new_client()) as http:
        rig.camera_stream = (await http.post("/api/streams/", json={"name": "cam", "url": camera.url()})).json()["id"]
        rig.other_stream = (await http.post("/api/streams/", json={"name": "b", "url": "rtsp://127.0.0.1:9/"})).json()["id"]
        rig.play_other = (await http.post(f"/api/streams/{rig.other_stream}/play-token", json={})).json()["token"]
        scratch = [(await http.post("/api/streams/", json={"name": f"s{n}", "url": "rtsp://127.0.0.1:9/"})).json()["id"]
                   for n in CONDITIONS]
        for name, role, streams in ((ADMIN_USER, "admin", []), (VIEWER, "viewer", [rig.camera_stream]),
                                    (OTHER_VIEWER, "viewer", [rig.other_stream]),
                                    *((f"scratch-{n}", "viewer", []) for n in scratch)):
            created = await http.post("/api/users/", json={"username": name, "password": PASSWORD, "role": role,
                                                            "streams": streams})
            assert created.status_code == 201, created.text
    answers: dict[tuple[str, str, str], tuple[int, str | None]] = {}
    wanted: dict[tuple[str, str, str], tuple[int, str | None]] = {}
    for condition, doomed in zip(CONDITIONS, scratch, strict=True):
        async with AsyncExitStack() as stack:
            client = await prepare(rig, condition, stack)
            for (rule, method), route in ROUTES.items():
                path, body = sample(rig, rule, method, condition, doomed)
                answers[rule, method, condition] = await http_answer(rig, client, condition, method, path, body)
                wanted[rule, method, condition] = expected(route, method, condition, names_stream="<stream_id" in rule)
            for path, route in SOCKETS.items():
                answers[path, "socket", condition] = await socket_answer(rig, client, condition, path)
                wanted[path, "socket", condition] = expected(route, "GET", condition, socket=True)
    wrong = {case: (answers[case], want) for case, want in wanted.items() if answers[case] != want}
    assert not wrong, "\n".join(f"{c}: got {got}, want {want}" for c, (got, want) in wrong.items())


@pytest.mark.parametrize("token_where", ["query", "subprotocol"])
async def test_wrong_tokens_on_a_socket_handshake_spend_the_rate_limit_as_on_rest(
        nursery: trio.Nursery, token_where: str) -> None:
    """A stranger guessing tokens on the socket handshake is slowed like one guessing on
    REST: each wrong try spends a RATE_LIMIT token, and past the burst it is RATE_LIMITED
    (with a 1008 close) before its token is even looked at."""
    server = await start_server(nursery, api_token=TOKEN, rate_limit=(0.01, 3.0))
    codes = []
    for n in range(5):
        guess = f"guess-{n:02d}-0123456789abcdef"
        options: dict[str, object] = {}
        url = f"{server.ws_base}/ws/stream?id=1"
        if token_where == "query":
            url += f"&token={guess}"
        else:
            options["subprotocols"] = [f"bearer.{guess}"]
        async with server.viewer(url.split("?", 1)[1], **options) as viewer:
            codes.append((await viewer.error("UNAUTHORIZED") if n < 3 else await viewer.error("RATE_LIMITED"))["code"])
            assert await viewer.closed() == 1008
    assert codes == ["UNAUTHORIZED"] * 3 + ["RATE_LIMITED"] * 2
    async with server.http() as http:  # the same bucket as REST
        assert (await http.get("/api/streams/", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 429

