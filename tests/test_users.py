"""Users and roles (issue 24), through the real server: login and its cookie, sessions
that end (logout, password change, removal, expiry) on every node, what a viewer may see
and do, cross-site writes with the cookie, guessing passwords, the audit log, the
`rtsp-viewer users` commands, and the users table under concurrent changes."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
from hypothesis import given, settings
from hypothesis import strategies as st

from app.accounts import (
    Change,
    InvalidUser,
    LastAdmin,
    Role,
    UserExists,
    Users,
    logins,
    role_of,
    stream_ids,
    user_name,
)
from app.accounts.logins import ACCOUNT_BURST, CLIENT_BURST, LoginGuard
from app.accounts.passwords import DEFAULT_PROFILE
from app.accounts.sessions import COOKIE, from_cookies, token_hash
from app.db import open_database
from app.policy import admission
from app.policy.tokens import basic
from app.store import now_iso
from tests.camera import Camera
from tests.helpers import BIN, ROOT, Server, start_server

PASSWORD = "correct horse battery"
URL = "rtsp://127.0.0.1:9/cam"


async def make_user(http: httpx.AsyncClient, name: str, role: str = "viewer", streams: object = (),
                    **headers: str) -> None:
    body = {"username": name, "password": PASSWORD, "role": role, "streams": list(streams) if streams != "all" else "all"}
    answer = await http.post("/api/users/", json=body, headers=headers)
    assert answer.status_code == 201, answer.text


def basic_auth(name: str, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


async def login(server: Server, name: str, password: str = PASSWORD, **headers: str) -> httpx.Response:
    async with server.http() as http:
        return await http.post("/api/login/", json={"username": name, "password": password}, headers=headers)


def cookie_of(answer: httpx.Response) -> str:
    found = from_cookies(answer.headers["set-cookie"].split(";")[0])
    assert found, answer.headers
    return found


def with_cookie(server: Server, token: str) -> httpx.AsyncClient:
    """A client that sends the session cookie, from the page's own origin."""
    return httpx.AsyncClient(base_url=server.base, timeout=10,
                             headers={"Cookie": f"{COOKIE}={token}", "Origin": server.base})


async def setup_people(server: Server) -> tuple[int, int]:
    """Streams a and b; admin ada, viewer vera (stream a). With no user and no API_TOKEN
    the server is open: the first admin is made by anyone (as `createsuperuser` would)."""
    async with server.http() as http:
        a = (await http.post("/api/streams/", json={"name": "a", "url": URL})).json()["id"]
        b = (await http.post("/api/streams/", json={"name": "b", "url": URL})).json()["id"]
        await make_user(http, "ada", "admin")
        await make_user(http, "vera", "viewer", [a], **basic_auth("ada"))
    return a, b


async def test_login_sets_a_strict_httponly_cookie_and_me_says_who(nursery: trio.Nursery) -> None:
    """200 with the cookie (HttpOnly, SameSite=Strict, Path=/; Secure only when a trusted
    proxy says the request came over HTTPS), and `/api/me/` with it says who."""
    server = await start_server(nursery, trusted_proxies=("127.0.0.1/32",))
    a, _ = await setup_people(server)
    answer = await login(server, "Vera")  # names are one spelling: Vera is vera
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"username": "vera", "role": "viewer", "streams": [a]}
    attributes = [p.strip().lower() for p in answer.headers["set-cookie"].split(";")]
    assert {"httponly", "samesite=strict", "path=/"} <= set(attributes) and "secure" not in attributes
    token = cookie_of(answer)
    async with with_cookie(server, token) as http:
        assert (await http.get("/api/me/")).json() == {"username": "vera", "role": "viewer", "streams": [a]}
    assert server.services is not None  # the database keeps the token's SHA-256 only, and no password
    stored = await server.services.store.db.run(lambda tx: tx.all("SELECT * FROM sessions") + tx.all("SELECT * FROM users"))
    assert (token_hash(token), "vera") in [row[:2] for row in stored] and token not in str(stored)
    assert PASSWORD not in str(stored) and all(row[3].startswith("$argon2id$") for row in stored if len(row) == 6)
    behind_https = await login(server, "vera", **{"X-Forwarded-Proto": "https"})
    assert "secure" in [p.strip().lower() for p in behind_https.headers["set-cookie"].split(";")]
    async with server.http() as http:
        assert (await http.get("/api/me/")).status_code == 401  # users exist: no one is anyone now
        assert (await http.get("/api/me/", headers={"Authorization": "Bearer nope"})).status_code == 401


async def test_a_stranger_cannot_say_it_came_over_https(nursery: trio.Nursery) -> None:
    """X-Forwarded-Proto from a peer that is not a trusted proxy is not believed."""
    server = await start_server(nursery)
    await setup_people(server)
    answer = await login(server, "vera", **{"X-Forwarded-Proto": "https"})
    assert "secure" not in [p.strip().lower() for p in answer.headers["set-cookie"].split(";")]


async def test_wrong_name_and_wrong_password_get_one_answer_after_one_check(
        nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    """401 AUTH, the same body, whether the user exists or not; both run an Argon2 check
    (the time it takes is measured by `python -m bench login`, not here)."""
    server = await start_server(nursery, password_hash=DEFAULT_PROFILE)
    await setup_people(server)
    checks: list[str] = []
    assert server.services is not None
    hashing = server.services.accounts.passwords
    real = hashing.hasher

    class Counting:
        def verify(self, stored: str, given: str) -> bool:
            checks.append(given)
            return real.verify(stored, given)

    monkeypatch.setattr(hashing, "hasher", Counting())
    wrong_password = await login(server, "vera", "not the password")
    no_such_user = await login(server, "nobody", "not the password")
    bad_name = await login(server, "not a name!", "not the password")
    assert wrong_password.status_code == no_such_user.status_code == bad_name.status_code == 401
    assert wrong_password.json() == no_such_user.json() == bad_name.json()
    assert wrong_password.json()["error"]["code"] == "AUTH"
    assert checks == ["not the password"] * 3
    assert "set-cookie" not in wrong_password.headers


async def test_logout_ends_the_session_on_the_server(nursery: trio.Nursery) -> None:
    """The cookie's value, replayed after logout, opens nothing."""
    server = await start_server(nursery)
    await setup_people(server)
    token = cookie_of(await login(server, "vera"))
    async with with_cookie(server, token) as http:
        assert (await http.get("/api/streams/")).status_code == 200
        out = await http.post("/api/logout/")
        assert out.status_code == 204 and COOKIE in out.headers["set-cookie"]
        after = await http.get("/api/streams/")
        assert after.status_code == 401 and after.json()["error"]["code"] == "UNAUTHORIZED"


async def test_a_session_ends_on_every_node_when_the_password_changes_or_the_user_goes(
        nursery: trio.Nursery, database_url: str, tmp_path: Path) -> None:
    """Two nodes on one database: a session made on one works on the other, and a new
    password (or the user's removal) on one ends it on both, at once."""
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{tmp_path / 'shared.db'}"
    one = await start_server(nursery, database_url=database_url, secret_key="s" * 32)
    two = await start_server(nursery, database_url=database_url, secret_key="s" * 32)
    await setup_people(one)
    for change, password in (("password", PASSWORD), ("removal", "a new password")):
        token = cookie_of(await login(one, "vera", password))
        async with with_cookie(two, token) as on_two, with_cookie(one, token) as on_one:
            assert (await on_two.get("/api/me/")).status_code == 200
            async with two.http() as admin:
                if change == "password":
                    done = await admin.patch("/api/users/vera/", json={"password": "a new password"},
                                             headers=basic_auth("ada"))
                else:
                    done = await admin.delete("/api/users/vera/", headers=basic_auth("ada"))
            assert done.status_code in (200, 204), done.text
            assert (await on_one.get("/api/me/")).status_code == 401
            assert (await on_two.get("/api/me/")).status_code == 401
        if change == "password":
            assert (await login(one, "vera")).status_code == 401
            assert (await login(one, "vera", "a new password")).status_code == 200


async def test_sessions_expire_when_idle_and_at_their_age(nursery: trio.Nursery) -> None:
    """SESSION_IDLE_TIMEOUT without a request, and SESSION_MAX_AGE after the login however
    used (the sessions' clock is moved, not waited for)."""
    server = await start_server(nursery, session_idle_timeout=3600, session_max_age=5 * 3600)
    await setup_people(server)
    assert server.services is not None
    sessions = server.services.accounts.sessions
    now = [1_000_000.0]
    sessions.clock = lambda: now[0]
    idle = cookie_of(await login(server, "vera"))
    used = cookie_of(await login(server, "vera"))
    async with with_cookie(server, idle) as idle_http, with_cookie(server, used) as used_http:
        for _ in range(5):  # `used` is used every 50 minutes: never idle
            now[0] += 3000
            assert (await used_http.get("/api/me/")).status_code == 200
        assert (await idle_http.get("/api/me/")).status_code == 401  # 250 minutes without a use
        now[0] += 3500  # used 58 minutes ago, but 308 minutes after its login: past SESSION_MAX_AGE
        assert (await used_http.get("/api/me/")).status_code == 401


async def test_a_viewer_lists_and_watches_only_its_streams_and_changes_nothing(nursery: trio.Nursery) -> None:
    """The list holds only its streams; another stream is NOT_FOUND exactly as a missing
    one; every write is 403 FORBIDDEN, on streams that exist or not; `?url=` is 403."""
    server = await start_server(nursery)
    a, b = await setup_people(server)
    async with server.http() as http:
        http.headers.update(basic_auth("vera"))
        assert [s["id"] for s in (await http.get("/api/streams/")).json()] == [a]
        assert [s["id"] for s in (await http.get("/api/streams/?limit=5&offset=0")).json()] == [a]
        hidden, missing = await http.get(f"/api/streams/{b}/"), await http.get("/api/streams/999/")
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["error"]["message"] == f"no stream {b}"
        assert missing.json()["error"]["message"] == "no stream 999"
        assert (await http.post(f"/api/streams/{a}/play-token", json={})).status_code == 201
        assert (await http.post(f"/api/streams/{b}/play-token", json={})).status_code == 404
        for method, path, body in (("POST", "/api/streams/", {"name": "x", "url": URL}),
                                   ("PATCH", f"/api/streams/{a}/", {"name": "x"}),
                                   ("PATCH", f"/api/streams/{b}/", {"name": "x"}),
                                   ("DELETE", f"/api/streams/{a}/", None), ("DELETE", "/api/streams/999/", None),
                                   ("POST", "/api/users/", {"username": "x", "password": PASSWORD, "role": "admin"}),
                                   ("PATCH", "/api/users/vera/", {"streams": "all"}), ("GET", "/api/users/", None),
                                   ("GET", "/metrics", None)):
            answer = await http.request(method, path, json=body)
            assert (answer.status_code, answer.json()["error"]["code"]) == (403, "FORBIDDEN"), (method, path)
    async with server.viewer(f"url={URL}", extra_headers=list(basic_auth("vera").items())) as viewer:
        assert (await viewer.error("FORBIDDEN"))["code"] == "FORBIDDEN"
        # the server's close first: Hypercorn pings at once, and a client already closing
        # cannot answer it (trio-websocket raises LocalProtocolError)
        assert await viewer.closed() == 1008
    async with server.http() as http:  # nothing changed
        names = [s["name"] for s in (await http.get("/api/streams/", headers=basic_auth("ada"))).json()]
        assert names == ["a", "b"]


async def test_cookie_writes_need_the_pages_origin(nursery: trio.Nursery) -> None:
    """A write with the session cookie and no Origin, or a foreign one, is 403 FORBIDDEN
    (a cross-site form or script); from the page's origin it works. Basic and tokens,
    which a browser does not add by itself, need no Origin."""
    server = await start_server(nursery)
    await setup_people(server)
    token = cookie_of(await login(server, "ada"))
    body = {"name": "from the cookie", "url": URL}
    async with server.http() as http:
        for origin in (None, "http://evil.example", "null"):
            headers = {"Cookie": f"{COOKIE}={token}"} | ({"Origin": origin} if origin else {})
            answer = await http.post("/api/streams/", json=body, headers=headers)
            assert (answer.status_code, answer.json()["error"]["code"]) == (403, "FORBIDDEN"), origin
            assert (await http.delete("/api/streams/1/", headers=headers)).status_code == 403
        assert (await http.post("/api/streams/", json=body, headers=basic_auth("ada"))).status_code == 201
    async with with_cookie(server, token) as page:
        assert (await page.post("/api/streams/", json=body)).status_code == 201
        assert len((await page.get("/api/streams/")).json()) == 4


async def test_guessing_passwords_slows_the_account_and_the_client_not_the_server(nursery: trio.Nursery) -> None:
    """Wrong passwords for one account from many addresses: past ACCOUNT_BURST that
    account answers 429 with Retry-After (even to its right password: the guesser cannot
    tell), while another account logs in. One address guessing across accounts is
    stopped past CLIENT_BURST; another address is not. Basic counts as the form does."""
    server = await start_server(nursery, trusted_proxies=("127.0.0.1/32",))
    await setup_people(server)
    assert server.services is not None
    server.services.accounts.guard = LoginGuard(clock=lambda: 0.0)  # no refill while the test runs
    statuses = []
    for n in range(int(ACCOUNT_BURST) + 1):
        via = {"X-Forwarded-For": f"203.0.113.{n + 1}"}
        statuses.append((await login(server, "vera", f"guess {n:04d}", **via)).status_code)
    assert statuses == [401] * int(ACCOUNT_BURST) + [429]
    locked = await login(server, "vera", **{"X-Forwarded-For": "203.0.113.99"})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1
    assert locked.json()["error"]["code"] == "RATE_LIMITED"
    async with server.http() as http:
        by_basic = await http.get("/api/me/", headers=basic_auth("vera") | {"X-Forwarded-For": "203.0.113.98"})
        assert by_basic.status_code == 429
    assert (await login(server, "ada", **{"X-Forwarded-For": "203.0.113.1"})).status_code == 200
    guesser = {"X-Forwarded-For": "198.51.100.7"}
    answers = [(await login(server, f"name-{n}", "wrong password", **guesser)).status_code
               for n in range(int(CLIENT_BURST) + 1)]
    assert answers == [401] * int(CLIENT_BURST) + [429]
    assert (await login(server, "ada", **guesser)).status_code == 429
    assert (await login(server, "ada", **{"X-Forwarded-For": "198.51.100.8"})).status_code == 200


async def test_every_change_writes_one_audit_line_without_secrets(
        nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    """Who (the user, or api-token), what, the target and the client; never a password,
    a camera's URL credentials or a cookie."""
    server = await start_server(nursery, api_token="root-token-0123456789abcdef")
    root = {"Authorization": "Bearer root-token-0123456789abcdef"}
    caplog.set_level(logging.INFO, logger="app.audit")
    async with server.http() as http:
        await make_user(http, "ada", "admin", **root)
        token = cookie_of(await login(server, "ada"))
        http.headers.update({"Cookie": f"{COOKIE}={token}", "Origin": server.base})
        created = await http.post("/api/streams/", json={"name": "cam", "url": "rtsp://u:camsecret@127.0.0.1:9/x"})
        stream = created.json()["id"]
        await http.patch(f"/api/streams/{stream}/", json={"name": "renamed"})
        await make_user(http, "vera", "viewer", [stream])
        await http.patch("/api/users/vera/", json={"password": "another secret"})
        await http.delete("/api/users/vera/")
        await http.delete(f"/api/streams/{stream}/")
    lines = [(r.actor, r.action, r.target, r.client) for r in caplog.records  # type: ignore[attr-defined]
             if getattr(r, "event", None) == "audit"]
    assert lines == [("api-token", "user.create", "ada", "127.0.0.1"), ("ada", "user.login", "ada", "127.0.0.1"),
                     ("ada", "stream.create", str(stream), "127.0.0.1"),
                     ("ada", "stream.update", str(stream), "127.0.0.1"),
                     ("ada", "user.create", "vera", "127.0.0.1"), ("ada", "user.password", "vera", "127.0.0.1"),
                     ("ada", "user.delete", "vera", "127.0.0.1"), ("ada", "stream.delete", str(stream), "127.0.0.1")]
    text = caplog.text + json.dumps([r.__dict__ for r in caplog.records], default=str)
    for secret in (PASSWORD, "another secret", "camsecret", token):
        assert secret not in text


async def test_users_over_rest_validate_and_keep_an_admin(nursery: trio.Nursery) -> None:
    """Bad bodies are 400 VALIDATION at their field; a taken name 409; the last admin
    cannot be removed or made a viewer (409): someone must manage the users, and with no
    user left the server would be open again (only the command line may do that)."""
    server = await start_server(nursery)
    await setup_people(server)
    async with server.http() as http:
        http.headers.update(basic_auth("ada"))
        for body, field in (({"username": "x", "password": "short", "role": "viewer"}, "password"),
                            ({"username": "bad name", "password": PASSWORD, "role": "viewer"}, "username"),
                            ({"username": "x", "password": PASSWORD, "role": "root"}, "role"),
                            ({"username": "x", "password": PASSWORD, "role": "viewer", "streams": [0]}, "streams"),
                            ({"username": "x", "password": PASSWORD, "role": "viewer", "extra": 1}, "extra"),
                            ({"password": PASSWORD, "role": "viewer"}, "username")):
            answer = await http.post("/api/users/", json=body)
            assert answer.status_code == 400 and field in answer.json()["error"]["fields"], (body, answer.text)
        taken = await http.post("/api/users/", json={"username": "VERA", "password": PASSWORD, "role": "viewer"})
        assert (taken.status_code, taken.json()["error"]["code"]) == (409, "CONFLICT")
        for attempt in (http.delete("/api/users/ada/"), http.patch("/api/users/ada/", json={"role": "viewer"})):
            answer = await attempt
            assert (answer.status_code, answer.json()["error"]["code"]) == (409, "CONFLICT")
        assert (await http.get("/api/users/nobody/")).status_code == 404
        listed = (await http.get("/api/users/")).json()
        assert [u["username"] for u in listed] == ["ada", "vera"]
        assert all("password" not in json.dumps(u) for u in listed)
        assert (await http.delete("/api/users/vera/")).status_code == 204
        alone = await http.delete("/api/users/ada/")  # the last user of all
        assert (alone.status_code, alone.json()["error"]["code"]) == (409, "CONFLICT")
        assert (await http.get("/api/me/", headers={"Authorization": ""})).status_code == 401


def run_cli(*args: str, stdin: str = "", database: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(BIN / "rtsp-viewer"), *args], input=stdin, capture_output=True, text=True,
                          env=environment, timeout=60, check=False)


async def test_the_users_commands_manage_the_database_a_server_reads(nursery: trio.Nursery, tmp_path: Path) -> None:
    """`createsuperuser`, `users add/list/grant/revoke/passwd/remove`, with the password on
    stdin; the server on that database knows them at once. The commands hash with the
    default cost (RFC 9106); a server with another PASSWORD_HASH makes the hash again at
    the user's next login."""
    database = tmp_path / "users.db"
    cli = partial(run_cli, database=database)
    assert cli("createsuperuser", "Ada", stdin=PASSWORD + "\n").returncode == 0
    assert cli("users", "add", "vera", "--role", "viewer", "--streams", "1,2", stdin=PASSWORD + "\n").returncode == 0
    assert cli("users", "add", "vera", "--role", "viewer", stdin=PASSWORD + "\n").returncode == 1  # exists
    assert cli("users", "add", "short", "--role", "viewer", stdin="pw\n").returncode == 2
    assert cli("users", "grant", "vera", "3").returncode == 0
    assert cli("users", "revoke", "vera", "1").returncode == 0
    listed = cli("users", "list")
    assert listed.stdout.splitlines() == ["ada\tadmin\tall", "vera\tviewer\t2,3"], listed
    assert cli("users", "remove", "ada").returncode == 1  # the last admin of vera
    changed = cli("users", "passwd", "vera", stdin="a new password\n")
    assert changed.returncode == 0 and "a new password" not in changed.stdout + changed.stderr
    assert '"user.password"' in changed.stderr or "user.password" in changed.stderr
    server = await start_server(nursery, database_url=f"sqlite:///{database}")  # PASSWORD_HASH=owasp-minimum
    assert server.services is not None
    users = server.services.accounts.users
    assert (await users.get("vera")).password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")  # type: ignore[union-attr]
    async with server.http() as http:
        me = await http.get("/api/me/", headers=basic_auth("vera", "a new password"))
        assert me.json() == {"username": "vera", "role": "viewer", "streams": [2, 3]}
        assert (await http.get("/api/me/")).status_code == 401
    # made again with the server's cost at the login, and the password still opens it
    assert (await users.get("vera")).password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")  # type: ignore[union-attr]
    assert (await login(server, "vera", "a new password")).status_code == 200
    assert cli("users", "remove", "vera").returncode == 0
    assert cli("users", "remove", "nobody").returncode == 1
    last = cli("users", "remove", "ada")  # on the server's machine it may, and is told what that means
    assert last.returncode == 0 and "open to anyone" in last.stderr


def test_a_basic_header_in_any_shape_is_a_credential_or_none_never_an_error() -> None:
    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=80) | st.binary(max_size=60).map(lambda b: "Basic " + base64.b64encode(b).decode()))
    def check(header: str) -> None:
        found = basic(header)
        assert found is None or (isinstance(found, tuple) and all(isinstance(p, str) for p in found))

    check()
    assert basic("Basic " + base64.b64encode(b"ada:pass:word").decode()) == ("ada", "pass:word")
    assert basic("Basic !!!") == ("", "")
    assert basic("Bearer x") is None


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@", min_size=1, max_size=64))
def test_a_name_has_one_spelling_whatever_its_case(name: str) -> None:
    """`Alice`, `ALICE` and `alice` are one user: a policy cannot be bypassed by case."""
    assert user_name(name) == user_name(name.upper()) == user_name(name.lower()) == name.lower()


SCALAR = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
JSON = SCALAR | st.lists(SCALAR, max_size=4) | st.dictionaries(st.text(max_size=5), SCALAR, max_size=3) \
    | st.lists(st.lists(SCALAR, max_size=3) | st.dictionaries(st.text(max_size=3), SCALAR, max_size=2), max_size=3)


@settings(max_examples=300, deadline=None)
@given(JSON, JSON, JSON)
def test_any_json_as_a_name_role_or_stream_list_is_taken_or_refused_never_an_error(
        name: object, role: object, streams: object) -> None:
    """What a body may hold at each field: its value, or InvalidUser naming the field
    (schemathesis found a role of `{}` raising TypeError: a 500)."""
    for parse, value, field in ((user_name, name, "username"), (role_of, role, "role"),
                                (stream_ids, streams, "streams")):
        try:
            parse(value)  # type: ignore[operator]
        except InvalidUser as invalid:
            assert invalid.field == field
    for text in ("1,2", " 3 , 4", "all"):
        assert stream_ids(text) in (frozenset({1, 2}), frozenset({3, 4}), None)


def _changes_at_once(url: str, ops: list[tuple[str, int]]) -> None:
    """Grants and revokes of distinct streams, all at once: none is lost."""
    async def run() -> frozenset[int] | None:
        db = open_database(url)
        await db.open()
        users = Users(db)
        name = f"v{uuid.uuid4().hex[:12]}"
        await users.add(name, Role.VIEWER, frozenset({1000, 1001}), "x", now_iso())
        async with trio.open_nursery() as nursery:
            for kind, stream in ops:
                change = Change(grant=frozenset({stream})) if kind == "grant" else Change(revoke=frozenset({stream}))
                nursery.start_soon(users.change, name, change, now_iso())
        user = await users.get(name)
        await users.remove(name)
        await db.close()
        assert user is not None
        return user.streams

    streams = trio.run(run)
    granted = {s for k, s in ops if k == "grant"}
    revoked = {s for k, s in ops if k == "revoke"}
    assert streams == frozenset(({1000, 1001} | granted) - revoked), ops


OPS = st.lists(st.tuples(st.sampled_from(["grant", "revoke"]), st.integers(1, 30)), min_size=2, max_size=8,
               unique_by=lambda op: op[1]).map(lambda ops: [*ops, ("revoke", 1000)])


@settings(max_examples=40, deadline=None)
@given(OPS)
def test_concurrent_grants_and_revokes_are_never_lost_on_sqlite(ops: list[tuple[str, int]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        _changes_at_once(f"sqlite:///{folder}/u.db", ops)


def test_concurrent_grants_and_revokes_are_never_lost_on_postgresql(postgres_server: object) -> None:
    url = postgres_server.new_database()  # type: ignore[attr-defined]

    @settings(max_examples=20, deadline=None)
    @given(OPS)
    def check(ops: list[tuple[str, int]]) -> None:
        _changes_at_once(url, ops)

    check()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_two_admins_demoted_at_once_leave_one(database: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Each sees another admin left; only one of them may be right (the admins' rows are
    locked): one change is refused with LastAdmin, and an admin remains."""
    url = f"sqlite:///{tmp_path / 'a.db'}" if database == "sqlite" else \
        request.getfixturevalue("postgres_server").new_database()
    db = open_database(url)
    await db.open()
    users = Users(db)
    for name in ("one", "two"):
        await users.add(name, Role.ADMIN, None, "x", now_iso())
    await users.add("viewer", Role.VIEWER, frozenset(), "x", now_iso())
    refused: list[str] = []

    async def demote(name: str) -> None:
        try:
            await users.change(name, Change(role=Role.VIEWER), now_iso())
        except LastAdmin:
            refused.append(name)

    for _ in range(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(demote, "one")
            nursery.start_soon(demote, "two")
        roles = sorted(str(u.role) for u in await users.all())
        assert roles.count("admin") == 1 and len(refused) == 1, (roles, refused)
        refused.clear()
        for name in ("one", "two"):
            await users.change(name, Change(role=Role.ADMIN), now_iso())
    await db.close()


async def test_a_users_socket_ends_when_its_session_ends_or_its_stream_is_taken_away(
        camera: Camera, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket let in by a user plays while the user may watch it: revoking its stream
    ends it with NOT_FOUND, a new password (its session ends) with UNAUTHORIZED, a logout
    the stock players' socket with 4401, the user's removal its HTTP stream.ts (by Basic).
    The credentials are looked at again every RECHECK seconds, made short here."""
    monkeypatch.setattr(admission, "RECHECK", 0.05)
    monkeypatch.setattr(logins, "RECENT", 0.0)
    server = await start_server(nursery)
    async with server.http() as http:
        stream = (await http.post("/api/streams/", json={"name": "cam", "url": camera.url()})).json()["id"]
        await make_user(http, "ada", "admin")
        await make_user(http, "vera", "viewer", [stream], **basic_auth("ada"))
    admin = basic_auth("ada")

    async def watching(token: str) -> Any:
        return server.viewer(f"id={stream}", extra_headers=[("Cookie", f"{COOKIE}={token}")])

    token = cookie_of(await login(server, "vera"))
    async with await watching(token) as viewer:
        await viewer.play()
        async with server.http() as http:
            assert (await http.patch("/api/users/vera/", json={"streams": []}, headers=admin)).status_code == 200
        assert (await viewer.error("NOT_FOUND"))["message"] == "no longer granted to this user"
        assert await viewer.closed() == 1008
    async with server.http() as http:
        assert (await http.patch("/api/users/vera/", json={"streams": [stream]}, headers=admin)).status_code == 200
    async with await watching(token) as viewer:
        await viewer.play()
        async with server.http() as http:
            changed = await http.patch("/api/users/vera/", json={"password": "a new password"}, headers=admin)
            assert changed.status_code == 200
        assert (await viewer.error("UNAUTHORIZED"))["message"] == "the session ended"
        assert await viewer.closed() == 1008
    token = cookie_of(await login(server, "vera", "a new password"))
    async with trio_websocket.open_websocket_url(f"{server.ws_base}/ws/stream.ts?id={stream}",
                                                 extra_headers=[("Cookie", f"{COOKIE}={token}")]) as ws:
        assert isinstance(await ws.get_message(), bytes)
        async with with_cookie(server, token) as page:
            assert (await page.post("/api/logout/")).status_code == 204
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            with trio.fail_after(15):
                while True:
                    await ws.get_message()
        with trio.CancelScope(shield=True):
            await ws._stream.aclose()
    assert (closed.value.reason.code, closed.value.reason.reason) == (4401, "UNAUTHORIZED")
    async with server.http() as http, http.stream("GET", f"/api/streams/{stream}/stream.ts",
                                                  headers=basic_auth("vera", "a new password")) as response:
        assert response.status_code == 200
        chunks = response.aiter_bytes()
        assert await anext(chunks)
        async with server.http() as other:
            assert (await other.delete("/api/users/vera/", headers=admin)).status_code == 204
        with trio.fail_after(15):  # the HTTP stream of a removed user ends
            async for _ in chunks:
                pass


async def test_health_and_the_page_tell_an_admins_cookie_from_a_viewers(nursery: trio.Nursery) -> None:
    """Public routes read the session cookie only when they need to know: health shows
    its details, and the page comes with the stream list, to an admin's session only."""
    server = await start_server(nursery)
    await setup_people(server)
    for name, details in (("ada", True), ("vera", False)):
        async with with_cookie(server, cookie_of(await login(server, name))) as http:
            health = (await http.get("/api/health/")).json()
            page = (await http.get("/")).content
        assert ("viewers" in health) is details, (name, health)
        assert (b'type="application/json">null</script>' not in page) is details
    async with server.http() as http:
        assert (await http.get("/api/health/")).json() == {"status": "ok"}


def _on_a_terminal(argv: list[str], answers: list[str], database: Path) -> tuple[int, str]:
    """Run `argv` with a terminal of its own (its controlling tty: where getpass asks),
    answering each prompt that ends in ": " in turn; (exit status, what it showed)."""
    import fcntl
    import pty
    import select
    import termios

    main, child = pty.openpty()

    def own_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    environment = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, env=environment,
                               preexec_fn=own_terminal, close_fds=True)
    os.close(child)
    shown, pending = b"", list(answers)
    try:
        while True:
            ready, _, _ = select.select([main], [], [], 30)
            assert ready, shown
            try:
                chunk = os.read(main, 1024)
            except OSError:  # the terminal's other side closed: the command ended
                break
            if not chunk:
                break
            shown += chunk
            if pending and shown.endswith(b": "):  # a prompt waits (not a line that ended after one)
                os.write(main, pending.pop(0).encode() + b"\n")
    finally:
        os.close(main)
        if process.poll() is None:  # an assertion above: end it by its own handle
            process.kill()
    return process.wait(timeout=30), shown.decode(errors="replace")


def test_on_a_terminal_the_password_is_asked_twice_and_never_shown(tmp_path: Path) -> None:
    database = tmp_path / "users.db"
    status, shown = _on_a_terminal([str(BIN / "rtsp-viewer"), "createsuperuser", "ada"],
                                   [PASSWORD, PASSWORD], database)
    assert status == 0 and "Password (again):" in shown and PASSWORD not in shown, shown
    status, shown = _on_a_terminal([str(BIN / "rtsp-viewer"), "users", "passwd", "ada"],
                                   ["one password", "another one"], database)
    assert status == 1 and "the passwords differ" in shown, shown
    assert run_cli("users", "list", database=database).stdout == "ada\tadmin\tall\n"


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_one_name_added_at_once_from_many_places_is_one_user(
        database: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Every add but one is UserExists, never a driver's error (a 500)."""
    url = f"sqlite:///{tmp_path / 'a.db'}" if database == "sqlite" else \
        request.getfixturevalue("postgres_server").new_database()
    dbs = [open_database(url) for _ in range(4)]  # as four nodes
    outcomes: list[str] = []

    async def add(db: object) -> None:
        try:
            await Users(db).add("ada", Role.ADMIN, None, "x", now_iso())  # type: ignore[arg-type]
            outcomes.append("added")
        except UserExists:
            outcomes.append("exists")

    for db in dbs:
        await db.open()
    async with trio.open_nursery() as nursery:
        for db in dbs:
            nursery.start_soon(add, db)
    for db in dbs:
        await db.close()
    assert sorted(outcomes) == ["added", "exists", "exists", "exists"]
