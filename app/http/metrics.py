"""`GET /metrics`: Prometheus metrics (prometheus-client's text exposition format).

Everything is read at scrape time from counters kept where things happen: the engine's
`Tally` (per stream: bytes, FFmpeg starts, restarts and exits by error code, drops, evictions; the
time to first media) and this edge's `EdgeTally` (sockets, send paths, HTTP requests).
Nothing per viewer per message is added to the fan-out path. Labels carry stream ids
(`stream="3"`; sockets playing their own `?url=` share `stream="url"`), never a URL.

Behind METRICS_TOKEN when set, else API_TOKEN when set (`Authorization: Bearer`).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from quart import Blueprint, Quart, Response, request

from supervisors import Registry

from ..counts import EdgeTally
from ..policy.admission import Need, door
from ..services import services
from ..targets import stream_label

blueprint = Blueprint("metrics", __name__)



class EngineCollector(Collector):
    """The engine's state and tally, and the edge's, as Prometheus metric families."""

    def __init__(self, registry: Registry, edge: EdgeTally) -> None:
        self._registry = registry
        self._edge = edge

    def collect(self) -> Iterable[Metric]:
        engine = self._registry
        statistics = engine.statistics()
        yield _gauge("rtsp_upstreams_running", "Upstreams (FFmpeg processes) running", statistics.running)
        yield _gauge("rtsp_upstreams_max", "MAX_CONCURRENT_STREAMS", statistics.max)
        viewers = GaugeMetricFamily("rtsp_viewers", "Viewers attached to a running upstream", labels=["stream"])
        live_drops: Counter[str] = Counter()
        viewers_of: Counter[str] = Counter()
        for key, hub in engine.live():
            viewers_of[stream_label(key)] += hub.viewers
            live_drops[stream_label(key)] += hub.viewer_drops
        for label, count in sorted(viewers_of.items()):
            viewers.add_metric([label], count)
        yield viewers
        tallies = engine.tally.streams
        for name, text, field in (
                ("rtsp_bytes_in", "MPEG-TS bytes read from FFmpeg", "bytes_in"),
                ("rtsp_bytes_out", "MPEG-TS bytes queued to viewers", "bytes_out"),
                ("rtsp_ffmpeg_starts", "FFmpeg processes started", "starts"),
                ("rtsp_ffmpeg_restarts", "New attempts after a failure, a reconnect or a PATCH", "restarts"),
                ("rtsp_slow_consumer_evictions", "Viewers cut off as SLOW_CONSUMER", "evictions")):
            family = CounterMetricFamily(name, text, labels=["stream"])
            for label, tally in tallies.items():
                family.add_metric([label], getattr(tally, field))
            yield family
        drops = CounterMetricFamily("rtsp_queue_drops", "Viewer queue overflows (each skips to a keyframe)",
                                    labels=["stream"])
        for label in sorted(set(tallies) | set(live_drops)):
            drops.add_metric([label], (tallies[label].drops if label in tallies else 0) + live_drops[label])
        yield drops
        exits = CounterMetricFamily("rtsp_ffmpeg_exits", "FFmpeg attempts that ended in an error, by its code "
                                    "(a requested restart or a stop is none)", labels=["stream", "code"])
        for label, tally in tallies.items():
            for code, count in sorted(tally.exits.items()):
                exits.add_metric([label, code], count)
        yield exits
        histogram = engine.tally.first_media
        first = HistogramMetricFamily("rtsp_first_media_seconds", "From a viewer's start to its first media")
        cumulative = list(itertools.accumulate(histogram.counts))
        first.add_metric([], [(_bound(b), c) for b, c in zip((*histogram.bounds, float("inf")), cumulative,
                                                              strict=True)], histogram.total)
        yield first
        edge = self._edge
        open_ = GaugeMetricFamily("rtsp_websockets_open", "WebSocket connections open", labels=["endpoint"])
        total = CounterMetricFamily("rtsp_websockets", "WebSocket connections accepted", labels=["endpoint"])
        for endpoint in sorted(edge.sockets_total):
            open_.add_metric([endpoint], edge.sockets_open[endpoint])
            total.add_metric([endpoint], edge.sockets_total[endpoint])
        yield open_
        yield total
        paths = GaugeMetricFamily("rtsp_send_path_sockets", "Playing sockets by send path (wire: the lean one)",
                                  labels=["path"])
        for path in ("wire", "asgi"):
            paths.add_metric([path], edge.send_paths[path])
        yield paths
        requests = CounterMetricFamily("rtsp_http_requests", "HTTP requests by route, method and status",
                                       labels=["route", "method", "status"])
        for (route, method, status), count in sorted(edge.requests.items()):
            requests.add_metric([route, method, status], count)
        yield requests


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


def exposition(registry: Registry, edge: EdgeTally) -> bytes:
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(EngineCollector(registry, edge))
    return generate_latest(collectors)


def install(app: Quart, edge: EdgeTally) -> None:
    """Count every HTTP response by route (its rule, never the path: ids are not labels)."""

    @app.after_request
    async def _count(response: Response) -> Response:
        rule = request.url_rule
        edge.request(rule.rule if rule is not None else "unmatched", request.method, response.status_code)
        return response


@blueprint.route("/metrics", methods=["GET"])
@door(Need.METRICS)
async def metrics() -> Response:
    """Open without API_TOKEN and METRICS_TOKEN; else either of those set opens it (the
    door's Need.METRICS)."""
    s = services()
    return Response(exposition(s.registry, s.metrics), content_type=CONTENT_TYPE_LATEST)
