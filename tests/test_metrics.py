"""`GET /metrics`: Prometheus's text format, parsed with prometheus-client's own parser."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from supervisors.hub import Hub
from supervisors.tally import FIRST_MEDIA_BUCKETS, Histogram, StreamTally
from supervisors.viewer import Viewer
from tests.camera import Camera
from tests.fakes import frame, pat, pmt
from tests.helpers import Server, start_server, wait_for
from tests.test_engine import _queued

PASSWORD = "Sekr1tMetrics"


async def scrape(server: Server, token: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels); also checks no URL or secret shows."""
    async with server.http() as http:
        response = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    text = response.text
    assert "rtsp://" not in text and PASSWORD not in text and "127.0.0.1" not in text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_across_a_play_stop_and_error_cycle(nursery: trio.Nursery) -> None:
    camera = Camera(auth="digest")
    await nursery.start(camera.run)
    server = await start_server(nursery)
    good = await server.create(camera.url(password=None))
    bad = await server.create(camera.url(password=PASSWORD))  # a wrong password: AUTH
    before = await scrape(server)
    assert value(before, "rtsp_upstreams_running") == 0
    assert value(before, "rtsp_http_requests_total", route="/api/streams/", method="POST", status="201") == 2

    async with server.viewer(f"id={good}") as viewer:
        await viewer.play()
        await viewer.collect(1.0)
        playing = await scrape(server)
        assert value(playing, "rtsp_upstreams_running") == 1
        assert value(playing, "rtsp_viewers", stream=str(good)) == 1
        assert value(playing, "rtsp_ffmpeg_starts_total", stream=str(good)) == 1
        assert value(playing, "rtsp_bytes_in_total", stream=str(good)) > 10_000
        assert value(playing, "rtsp_bytes_out_total", stream=str(good)) > 10_000
        assert value(playing, "rtsp_websockets_open", endpoint="/ws/stream") == 1
        assert value(playing, "rtsp_send_path_sockets", path="wire") == 1
        assert value(playing, "rtsp_first_media_seconds_count") == 1
        assert value(playing, "rtsp_first_media_seconds_bucket", le="+Inf") == 1
        await viewer.send("stop")
        await viewer.status("stopped")
        stopped = await scrape(server)
        assert value(stopped, "rtsp_viewers", stream=str(good)) == 0
        # counters never go back, and count on while the stream lingers
        assert value(stopped, "rtsp_bytes_in_total", stream=str(good)) >= value(
            playing, "rtsp_bytes_in_total", stream=str(good))

    async with server.viewer(f"id={bad}") as viewer:
        await viewer.send("start")
        await viewer.error("AUTH")
    failed = await scrape(server)
    assert value(failed, "rtsp_ffmpeg_exits_total", stream=str(bad), code="AUTH") == 1
    assert value(failed, "rtsp_ffmpeg_restarts_total", stream=str(bad)) == 0  # AUTH is not retried
    await wait_for(lambda: server.registry is not None and server.registry.statistics().viewers == 0)
    closed = await scrape(server)
    assert value(closed, "rtsp_websockets_open", endpoint="/ws/stream") == 0
    assert value(closed, "rtsp_websockets_total", endpoint="/ws/stream") == 2
    assert value(closed, "rtsp_send_path_sockets", path="wire") == 0

    # a socket playing its own URL counts under stream="url", never under its URL
    async with server.viewer(f"url={camera.url(password=None)}") as viewer:
        await viewer.play()
    by_url = await scrape(server)
    assert value(by_url, "rtsp_ffmpeg_starts_total", stream="url") == 1

    async with server.http() as http:  # a deleted stream's series go away
        assert (await http.delete(f"/api/streams/{bad}")).status_code == 204
    assert ("rtsp_ffmpeg_exits_total", (("code", "AUTH"), ("stream", str(bad)))) not in await scrape(server)


@pytest.mark.parametrize("tokens", [{"api_token": "a" * 16}, {"api_token": "a" * 16, "metrics_token": "m" * 16},
                                    {"metrics_token": "m" * 16}])
async def test_metrics_are_behind_api_token_or_metrics_token(nursery: trio.Nursery, tokens: dict[str, str]) -> None:
    server = await start_server(nursery, **tokens)
    async with server.http() as http:
        refused = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer " + "x" * 16})
    assert refused.status_code == wrong.status_code == 401
    async with server.http() as http:  # made-up methods and paths add no label values
        for i in range(20):
            await http.request(f"M{i}", f"/api/x{i}")
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert refused.json()["error"]["code"] == "UNAUTHORIZED"
    for token in tokens.values():
        samples = await scrape(server, token)
    routes = {dict(labels).get("route") for name, labels in samples if name == "rtsp_http_requests_total"}
    methods = {dict(labels).get("method") for name, labels in samples if name == "rtsp_http_requests_total"}
    assert routes <= {"/metrics", "unmatched"} and methods <= {"GET", "other"}, (routes, methods)


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_the_histogram_counts_each_observation_once_in_its_bucket(observations: list[float]) -> None:
    histogram = Histogram()
    for seconds in observations:
        histogram.observe(seconds)
    assert sum(histogram.counts) == len(observations)
    for i, bound in enumerate((*FIRST_MEDIA_BUCKETS, float("inf"))):
        assert sum(histogram.counts[:i + 1]) == sum(1 for o in observations if o <= bound)


@given(st.lists(st.sampled_from(["attach", "detach", "key", "frame", "overflow"]), max_size=40))
def test_the_tally_counts_every_byte_read_and_every_byte_queued(ops: list[str]) -> None:
    """Whatever the interleaving of joins, leaves, keyframes and overflows: bytes in are
    what the hub read, bytes out what its viewers were given, and drops are kept when the
    viewer that had them leaves."""
    tally = StreamTally()
    hub = Hub(tally=tally)
    viewers: list[Viewer] = []
    gone: list[Viewer] = []
    given_before_overflow: dict[Viewer, int] = {}
    read = 0
    for i, op in enumerate(["key", *ops]):
        if op == "attach":
            viewers.append(Viewer(f"v{i}", budget=1 << 30, clock=lambda: 0.0))
            hub.attach(viewers[-1])
        elif op == "detach" and viewers:
            hub.detach(viewer := viewers.pop(0))
            gone.append(viewer)
        elif op == "overflow" and viewers:  # the first viewer's queue overflows and is emptied
            viewer = viewers[0]
            given_before_overflow[viewer] = given_before_overflow.get(viewer, 0) + len(_queued(viewer))
            viewer.budget = 0
            hub.publish(frame(i, key=False))
            read += len(frame(i, key=False))
            viewer.budget = 1 << 30
        else:
            chunk = (pat() + pmt() + frame(i, key=True)) if op == "key" else frame(i, key=False)
            hub.publish(chunk)
            read += len(chunk)
    assert tally.bytes_in == read
    given = sum(len(_queued(v)) + given_before_overflow.get(v, 0) for v in viewers + gone)
    assert tally.bytes_out == given
    assert tally.drops == sum(v.drops for v in gone)
    assert hub.statistics().viewer_drops == sum(v.drops for v in viewers)
