"""Unit tests: stderr classification, URL validation and masking, settings parsing."""

from __future__ import annotations

import itertools
import math
from contextlib import ExitStack
from urllib.parse import quote

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from app.policy.limits import Connections, Limited
from app.services import PROBE_TTL, FFmpegCheck, FFmpegInfo
from app.settings import SettingsError, load
from app.sockets.asgi import Socket, route
from supervisors.camera.urls import InvalidUrl, mask_text, mask_url, sharing_key, validate_url
from supervisors.classify import classify, video_info

# Real stderr lines of FFmpeg 5.1 (Debian 12) and 9.0 (imageio-ffmpeg) for each failure
STDERR = {
    "AUTH": [
        "[rtsp @ 0x55d0c8e2a3c0] method DESCRIBE failed: 401 Unauthorized\n"
        "rtsp://admin:pw@10.0.0.5/x: Server returned 401 Unauthorized (authorization failed)\n",
        "[in#0 @ 0x5631] Error opening input: Server returned 401 Unauthorized (authorization failed)\n",
        "[rtsp @ 0x1] method DESCRIBE failed: 403 Forbidden\n",
    ],
    "NOT_FOUND": [
        "[rtsp @ 0x55] method DESCRIBE failed: 404 Not Found\nrtsp://h/x: Server returned 404 Not Found\n",
        "[in#0 @ 0x56] Error opening input: Server returned 404 Not Found\n",
    ],
    "UNREACHABLE": [
        "[tcp @ 0x5] Connection to tcp://10.0.0.5:554?timeout=0 failed: Connection refused\n",
        "[tcp @ 0x5] Failed to resolve hostname nope.invalid: Name or service not known\n",
        "[tcp @ 0x5] Connection to tcp://10.9.9.9:554 failed: No route to host\n",
        "[tcp @ 0x5] Connection to tcp://10.9.9.9:554 failed: Network is unreachable\n",
        "[tcp @ 0x5] Failed to resolve hostname cam: Temporary failure in name resolution\n",
    ],
    "TIMEOUT": [
        "[tcp @ 0x5] Connection to tcp://10.0.0.5:554?timeout=10000000 failed: Connection timed out\n",
        "[rtsp @ 0x5] Operation timed out\n",
    ],
    "STREAM_ERROR": [
        "[rtsp @ 0x5] Failed reading RTSP data: End of file\n",
        "[rtsp @ 0x5] method SETUP failed: 461 Unsupported transport\n",
        "Stream map '0:v:0' matches no streams.\n",
        "",
    ],
}


@pytest.mark.parametrize(("code", "stderr"), [(c, s) for c, items in STDERR.items() for s in items])
def test_classifier_maps_ffmpeg_stderr_to_codes(code: str, stderr: str) -> None:
    failure = classify(stderr, secrets=("pw",))
    assert failure.code == code
    assert failure.message
    assert "admin:pw@" not in failure.message and " @ 0x" not in failure.message


def test_classifier_masks_passwords_in_its_excerpt() -> None:
    failure = classify("rtsp://admin:topsecret@cam/x: Invalid data found when processing input\n",
                       secrets=("topsecret",))
    assert failure.code == "STREAM_ERROR"
    assert "topsecret" not in failure.message and "admin:***@cam" in failure.message


def test_video_info_from_ffmpeg_stream_line() -> None:
    line = "  Stream #0:0: Video: h264 (Constrained Baseline), yuv420p(progressive), 640x360, 25 fps\n"
    assert video_info(line) == {"codec": "h264", "width": 640, "height": 360}
    assert video_info("Stream #0:0: Video: h264, none\n") is None


@pytest.mark.parametrize("url", [
    "rtsp://h/x", "rtsps://h:322/x", "RTSP://Cam.local:554/a?b=c", "rtsp://u:p@10.0.0.5/Streaming/101",
    "rtsp://[::1]:8554/live", "rtsp://u:p%40ss@h/x", "rtsp://h",
])
def test_valid_urls(url: str) -> None:
    scheme, rest = url.split("://", 1)
    assert validate_url(url) == f"{scheme.lower()}://{rest}"  # the scheme in lower case, the rest as given


@pytest.mark.parametrize("url", [
    "", "http://h/x", "rtsp:/h", "rtsp://", "rtsp://:554/x", "rtsp://h:0/", "rtsp://h:65536/",
    "rtsp://h:port/", "rtsp://h/a b", "rtsp://h/\x00", "rtsp://h/\x7f", "-rtsp://h/", "rtsp://h:/x",
    "rtsp://h/" + "a" * 2048, " rtsp://h/", "rtsp://h/\u0085",
])
def test_invalid_urls(url: str) -> None:
    with pytest.raises(InvalidUrl):
        validate_url(url)


def test_invalid_url_message_never_holds_the_password() -> None:
    with pytest.raises(InvalidUrl) as error:
        validate_url("rtsp://admin:s3cret@h:99999/x")
    assert "s3cret" not in str(error.value)


def test_sharing_key_normalizes_case_and_default_port() -> None:
    assert sharing_key("RTSP://Cam.Local/x") == sharing_key("rtsp://cam.local:554/x")
    assert sharing_key("rtsp://h/x") != sharing_key("rtsp://h/y")
    assert sharing_key("rtsp://a:b@h/x") != sharing_key("rtsp://a:c@h/x")


passwords = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)
users = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd")), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(user=users, password=passwords, host=st.sampled_from(["10.0.0.5", "cam.local", "[::1]"]),
       path=st.sampled_from(["/", "/live", "/cam/realmonitor?channel=1&subtype=0"]))
def test_no_generated_password_survives_masking(user: str, password: str, host: str, path: str) -> None:
    url = f"rtsp://{user}:{quote(password, safe='')}@{host}:554{path}"
    validate_url(url)
    expected = f"rtsp://{user}:***@{host}:554{path}"
    masked = mask_url(url)
    assert masked == expected
    line = f"[tcp @ 0x1] {url}: Server returned 401 Unauthorized; url={url}"
    assert mask_text(line) == f"[tcp @ 0x1] {expected}: Server returned 401 Unauthorized; url={expected}"


@settings(max_examples=300, deadline=None)
@given(password=st.text(st.characters(blacklist_characters="/?#@\\", blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
                        min_size=1, max_size=30))
def test_raw_passwords_are_masked_in_text(password: str) -> None:
    """Even unencoded (as a user may type it), a password inside a URL never survives."""
    text = f"Connection to rtsp://admin:{password}@cam:554/live failed"
    assert mask_text(text) == "Connection to rtsp://admin:***@cam:554/live failed"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_validate_url_never_crashes(text: str) -> None:
    try:
        validate_url(text)
    except InvalidUrl:
        pass


def test_settings_defaults_and_parsing() -> None:
    settings_ = load({})
    assert (settings_.ffmpeg_timeout, settings_.max_concurrent_streams, settings_.max_streams_per_client,
            settings_.host, settings_.port, settings_.linger) == (10, 10, 5, "127.0.0.1", 8000, 5)
    assert settings_.database_path == "data/streams.db"
    custom = load({"FFMPEG_TIMEOUT": "2.5", "LINGER": "0", "LOG_LEVEL": "debug", "PORT": "0"})
    assert (custom.ffmpeg_timeout, custom.linger, custom.log_level, custom.port) == (2.5, 0, "DEBUG", 0)
    with pytest.raises(SettingsError, match=r"MAX_CONCURRENT_STREAMS.*LINGER|LINGER.*MAX_CONCURRENT"):
        load({"MAX_CONCURRENT_STREAMS": "0", "LINGER": "soon"})


def test_log_formatters_mask_every_line(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import logging

    from app.logs import configure

    for fmt in ("text", "json"):
        configure("INFO", fmt)
        log = logging.getLogger("tests.masking")
        log.warning("connecting to %s", "rtsp://admin:Sup3r-Secret@cam/live")
        try:
            raise ValueError("rtsp://admin:Sup3r-Secret@cam/live refused")
        except ValueError:
            log.exception("boom")
        err = capsys.readouterr().err
        assert "Sup3r-Secret" not in err and "admin:***@cam/live" in err
        if fmt == "json":
            assert all(json.loads(line)["level"] for line in err.strip().splitlines() if line.startswith("{"))
    logging.getLogger().handlers.clear()


def test_deploy_hypercorn_toml_matches_the_embedded_server() -> None:
    import tomllib
    from pathlib import Path

    from app.cli.main import hypercorn_config
    from app.settings import Settings

    deploy = tomllib.loads((Path(__file__).parent.parent / "deploy/hypercorn.toml").read_text())
    embedded = hypercorn_config(Settings())
    assert deploy["worker_class"] == "trio" and deploy["workers"] == 1
    for key in ("graceful_timeout", "websocket_ping_interval", "read_timeout", "websocket_max_message_size"):
        assert deploy[key] == getattr(embedded, key), key


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=60), st.integers(1, 3), st.integers(1, 6))
def test_connection_limits_hold_under_any_interleaving(steps: list[tuple[bool, int]], per_client: int,
                                                       total: int) -> None:
    """Opening (True) or closing (False) a socket of client k, in any order: each limit
    refuses exactly when it is reached (the total one reads the running count)."""
    connections = Connections(per_client, total)
    held: dict[int, list[ExitStack]] = {k: [] for k in range(4)}
    for opening, k in steps:
        if not opening:
            if held[k]:
                held[k].pop().close()
            continue
        stack = ExitStack()
        full = sum(map(len, held.values())) >= total or len(held[k]) >= per_client
        try:
            stack.enter_context(connections.hold(f"10.0.0.{k}"))
        except Limited:
            assert full
        else:
            assert not full
            held[k].append(stack)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=8)), max_size=5))
def test_a_socket_reads_its_query_as_quart_does(pairs: list[tuple[str, bytes]]) -> None:
    """`Socket.args` (the sockets are served before Quart) gives what Quart's `args` gave,
    for any names and any bytes as values, percent-encoded (a camera password may be any
    bytes: a percent-escape that is not UTF-8 stays as it was)."""
    from quart.wrappers.request import Request
    from werkzeug.datastructures import Headers

    query = "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in pairs).encode()
    socket = Socket({"query_string": query, "headers": []}, receive=None, send=None)  # type: ignore[arg-type]
    quart = Request("GET", "http", "/", query, Headers(), "", "1.1", {}, send_push_promise=None)  # type: ignore[arg-type]
    assert list(socket.args().items(multi=True)) == list(quart.args.items(multi=True))


@settings(max_examples=300, deadline=None)
@given(root=st.sampled_from(["", "/", "/cam", "/cam/", "/a/b", "/ws"]),
       before=st.sampled_from(["", "/cam", "/camera", "/x/cam", "/cam/", "/a/b", "/a/bc", "/ws"]),
       socket=st.sampled_from(["/ws/stream", "/ws/stream/", "/ws/stream.ts", "/ws/other", "/stream"]))
def test_a_socket_path_is_matched_below_root_path_as_a_whole_path_prefix(root: str, before: str, socket: str) -> None:
    """A media socket is served for `root_path` + its path, with or without a trailing
    slash, and for nothing else: `/cam` holds `/cam/ws/stream`, not `/camera/ws/stream`
    nor `/ws/stream` outside it (those go on to Quart)."""
    served: list[str] = []

    async def handler(socket: Socket) -> None:
        served.append(socket.path)

    async def quart(scope: object, receive: object, send: object) -> None:
        served.append("quart")

    app = route(quart, {"/ws/stream": handler, "/ws/stream.ts": handler})
    path = before + socket
    trio.run(app, {"type": "websocket", "path": path, "root_path": root, "headers": []}, None, None)
    prefix = root.rstrip("/")
    inside = path.startswith(prefix + "/") if prefix else True
    wanted = inside and path[len(prefix):].removesuffix("/") in ("/ws/stream", "/ws/stream.ts")
    assert served == ([path] if wanted else ["quart"]), (root, path)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 30), st.booleans()), min_size=1, max_size=40), st.floats(0.001, 12))
def test_ffmpeg_is_checked_once_at_a_time_and_at_most_once_per_ttl(callers: list[tuple[float, bool]],
                                                                   takes: float) -> None:
    """Health's FFmpeg check under any arrival of callers (some giving up half-way) and any
    check duration: never two checks at once, a new one only when the last answer is older
    than PROBE_TTL, and every caller that waits gets an answer."""
    running: list[int] = [0]
    started: list[float] = []
    answered: list[float] = []

    async def probe(path: str) -> FFmpegInfo:
        running[0] += 1
        assert running[0] == 1, "two checks at once"
        started.append(trio.current_time())
        await trio.sleep(takes)
        running[0] -= 1
        return FFmpegInfo(path, "9.0", None)

    async def main() -> None:
        check = FFmpegCheck("ffmpeg", probe)

        async def caller(at: float, leaves: bool) -> None:
            await trio.sleep(at)
            with trio.move_on_after(takes / 2 if leaves else math.inf):
                answered.append((await check.info()) and trio.current_time())

        async with trio.open_nursery() as nursery:
            for at, leaves in callers:
                nursery.start_soon(caller, at, leaves)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert all(later - earlier >= min(takes, 0) + PROBE_TTL for earlier, later in itertools.pairwise(started))
    assert len(answered) >= sum(not leaves for _, leaves in callers)
