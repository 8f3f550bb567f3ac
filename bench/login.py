"""`python -m bench login`: what signing in costs, and that a wrong name costs what a
wrong password does (issue 24: "about the same time whether the user exists or not").

One `rtsp-viewer serve` process on a temporary SQLite database, behind no proxy but
trusting 127.0.0.1's X-Forwarded-For, so each try comes from an address of its own (the
per-client limit stays out of the way) and each wrong password goes to a user of its own
(the per-account limit too). Prints the median and spread of: a wrong password for a
user that exists, a name no user has, a right password (login and its cookie), and then
a request by session cookie, by Basic (checked once, then remembered) and by API_TOKEN.
"""

from __future__ import annotations

import base64
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import trio

from tests.helpers import BIN, spawn

PASSWORD = "correct horse battery"
TOKEN = "bench-token-0123456789abcdef"


def _row(name: str, times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return f"{name:<34} {statistics.median(ms):8.1f} {ms[len(ms) // 10]:8.1f} {ms[-1 - len(ms) // 10]:8.1f} {len(ms):5d}"


async def bench_login(environ: dict[str, str], rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        env = {**environ, "DATABASE_URL": f"sqlite:///{Path(folder) / 'users.db'}", "API_TOKEN": TOKEN,
               "TRUSTED_PROXIES": "127.0.0.1/32"}
        async with trio.open_nursery() as nursery:
            server = await spawn(nursery, [str(BIN / "rtsp-viewer"), "serve", "--port", "0"], env)
            try:
                await _measure(await server.url(), rounds)
            finally:
                server.process.terminate()
                with trio.CancelScope(shield=True):
                    await server.process.wait()
                nursery.cancel_scope.cancel()


async def _timed(call: object) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    answer = await call  # type: ignore[misc]
    return time.perf_counter() - started, answer


async def _measure(base: str, rounds: int) -> None:
    root = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        for n in range(rounds):
            made = await http.post("/api/users/", headers=root,
                                   json={"username": f"user{n}", "password": PASSWORD, "role": "viewer"})
            assert made.status_code == 201, made.text
        rows: dict[str, list[float]] = {"wrong password (user exists)": [], "no such user": [],
                                        "right password (login)": []}
        cookie = ""
        for n in range(rounds):  # interleaved: the machine's noise falls on both alike
            for name, body, want in (("wrong password (user exists)", {"username": f"user{n}", "password": "nope nope"}, 401),
                                     ("no such user", {"username": f"ghost{n}", "password": "nope nope"}, 401),
                                     ("right password (login)", {"username": f"user{n}", "password": PASSWORD}, 200)):
                spent, answer = await _timed(http.post("/api/login/", json=body,
                                                       headers={"X-Forwarded-For": f"198.51.{n // 200}.{n % 200 + 1}"}))
                assert answer.status_code == want, answer.text
                rows[name].append(spent)
                cookie = answer.cookies.get("rtsp_viewer_session", cookie)
        by: dict[str, dict[str, str]] = {
            "GET /api/me/ by session cookie": {"Cookie": f"rtsp_viewer_session={cookie}"},
            "GET /api/me/ by Basic (remembered)": {"Authorization": "Basic " + base64.b64encode(
                f"user0:{PASSWORD}".encode()).decode()},
            "GET /api/me/ by API_TOKEN": root}
        for name, headers in by.items():
            rows[name] = []
            for _ in range(rounds * 5):
                spent, answer = await _timed(http.get("/api/me/", headers=headers))
                assert answer.status_code == 200, answer.text
                rows[name].append(spent)
    print(f"{'(milliseconds)':<34} {'median':>8} {'p10':>8} {'p90':>8} {'n':>5}")
    for name, times in rows.items():
        print(_row(name, times))
    wrong, ghost = statistics.median(rows["wrong password (user exists)"]), statistics.median(rows["no such user"])
    print(f"no such user / wrong password: {ghost / wrong:.2f} (1.00: the answer's time tells nothing)")
