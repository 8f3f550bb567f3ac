"""The app factory: a QuartTrio app with its blueprints, and the media sockets in front of it.

The engine (a Registry) is started in `app.nursery` before serving and cancelled after;
its upstreams' FFmpeg processes are ended and reaped before the app's nursery closes.
`own_process`: the app owns the process it runs in (`rtsp-viewer serve`, `app.asgi`
under Hypercorn), and takes its open-file limit, SIGTERM and SIGINT (`app/process.py`).
Every connection's socket gets its options from the app, whoever serves it.
"""

from __future__ import annotations

import logging
import time

import trio
from quart_trio import QuartTrio

from supervisors import EngineConfig, Registry
from supervisors.ffmpeg import Runner
from supervisors.locks import KeyedLocks
from supervisors.registry import camera_runner
from supervisors.snapshot import Snapshots

from . import errors, logs
from .accounts import Accounts, Sessions, Users
from .accounts.passwords import Passwords
from .cluster import Cluster
from .http import cluster as cluster_view
from .http import (
    discover,
    doors,
    health,
    login,
    metrics,
    openapi,
    page,
    play_tokens,
    snapshot,
    stream_ts,
    streams,
    users,
)
from .policy import limits
from .policy.origins import Policy
from .policy.tokens import Access, server_key
from .process import Shutdown, open_file_limit, raise_fd_limit
from .services import FFmpegCheck, Services
from .settings import Settings
from .sockets import asgi, session
from .sockets.wire import tune_socket
from .store import StorageError, Store
from .targets import stream_label

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, runner: Runner | None = None, own_process: bool = False) -> QuartTrio:
    app = QuartTrio(__name__, static_folder=None)  # page.py serves app/static
    app.config["MAX_CONTENT_LENGTH"] = streams.MAX_BODY
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = 3
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.converters["stream_id"] = streams.StreamId
    ffmpeg = settings.ffmpeg()
    config = EngineConfig(
        ffmpeg=ffmpeg, ffmpeg_timeout=settings.ffmpeg_timeout, linger=settings.linger,
        max_streams=settings.max_concurrent_streams,
        max_streams_per_client=settings.max_streams_per_client, sources=settings.source_policy())
    access = Access(settings.api_token, server_key(settings.secret_key, settings.database_path))
    store = Store(settings.database_url)
    trusted = limits.parse_networks(settings.trusted_proxies)
    rates = limits.RateLimiter(*settings.rate_limit)
    soft_fds = raise_fd_limit() if own_process else open_file_limit()
    connections = limits.Connections(settings.max_connections_per_client, limits.socket_cap(soft_fds))
    policy = Policy.of(settings.cors_origins, settings.allowed_hosts, settings.host)
    edits: KeyedLocks[int] = KeyedLocks()
    cluster = Cluster(store, access, lease_seconds=settings.lease_seconds, node_url=settings.node_url,
                      node_id=settings.node_id, edits=edits.hold)
    registry = Registry(config, cluster.runner(runner or camera_runner(config)), group=stream_label)
    cluster.registry = registry
    accounts = Accounts(Users(store.db), Sessions(store.db, settings.session_idle_timeout, settings.session_max_age,
                                                  time.time), Passwords(settings.password_hash))
    s = Services(settings=settings, access=access, store=store, accounts=accounts, registry=registry, cluster=cluster, edits=edits,
                 snapshots=Snapshots(registry, ffmpeg, settings.ffmpeg_timeout), ffmpeg=FFmpegCheck(ffmpeg), rates=rates,
                 connections=connections, origins=policy, trusted=trusted,
                 shutdown=Shutdown(registry, own_process=own_process, leave=cluster.leave))
    app.extensions["rtsp"] = s
    engine_scope, shutdown_scope, cluster_scope = trio.CancelScope(), trio.CancelScope(), trio.CancelScope()

    async def run_engine(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with engine_scope:
            await s.registry.run(task_status=task_status)

    @app.before_serving
    async def _start() -> None:
        try:
            await s.store.open()
        except StorageError as error:  # serve anyway: health says degraded, REST says 503
            log.error("storage unavailable at start: %s", error)
        await app.nursery.start(run_engine)
        await app.nursery.start(run_cluster)
        await app.nursery.start(run_shutdown)

    async def run_cluster(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with cluster_scope:
            await s.cluster.run(task_status=task_status)

    async def run_shutdown(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with shutdown_scope:
            await s.shutdown.run(task_status=task_status)

    @app.after_serving
    async def _stop() -> None:
        s.registry.shutdown()
        shutdown_scope.cancel()
        cluster_scope.cancel()
        engine_scope.cancel()
        await s.store.close()

    def connected(send: object) -> None:
        tune_socket(send)
        s.shutdown.follow(send)

    # the media sockets are served before Quart (app/sockets/asgi.py)
    app.asgi_app = asgi.route(app.asgi_app, session.handlers(s), connected=connected)  # type: ignore[method-assign, assignment]
    errors.install(app)
    logs.install(app)  # first: its request id and clock start before admission answers
    doors.install(app, s)
    doors.install_cors(app, policy)
    metrics.install(app, s.metrics)
    for module in (health, page, login, streams, users, stream_ts, snapshot, session, play_tokens, openapi, metrics,
                   cluster_view, discover):
        app.register_blueprint(module.blueprint)
    doors.check_doors(app)
    return app
