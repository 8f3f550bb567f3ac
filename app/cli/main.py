"""`rtsp-viewer serve [--host --port]`: the app under Hypercorn's trio worker, embedded.

On SIGTERM/SIGINT: every viewer gets `stopped` and a 1001 close, every upstream ends
(SIGTERM to FFmpeg, SIGKILL after 2 s, reaped), and the process exits within 5 s: 0 when
every connection closed in time, EXIT_FORCED when one held it and it was ended anyway.
The app does that itself (`app/process.py`), as it does under plain Hypercorn; `serve`
is the server alone (embeddable: it takes no signal), `serve_until_signal` the process.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio import serve as hypercorn_serve
from quart_trio import QuartTrio

from supervisors import InvalidUrl, Transport, validate_url
from supervisors.events import first_of

from ..factory import create_app
from ..logs import configure
from ..services import Services
from ..settings import Settings, load_or_exit
from ..sockets.wire import DEAD_AFTER
from . import discover, operator, users, workers

log = logging.getLogger(__name__)
PING_INTERVAL = 15.0  # WebSocket pings; a live client answers each with a pong (each costs
# ~0.7 ms of CPU, mostly waking the client: `python -m bench idle` measured 200 viewers at
# 1.5 % of a core when pinged every 10 s, 0.9 % every 15 s)

DEFAULT_SERVER = "http://127.0.0.1:8000"
MAX_CLIENT_MESSAGE = 64 * 1024


class BindError(Exception):
    """The server could not listen on its address; str() is the one line to print."""


class ServerConfig(Config):  # type: ignore[misc]
    """Hypercorn's Config, whose failure to listen is one line (BindError). The client
    sockets' options are the app's (`wire.tune_socket`), as under plain Hypercorn."""

    def create_sockets(self) -> Sockets:
        try:
            return super().create_sockets()
        except (OSError, ValueError, OverflowError) as error:  # in use, not ours, not an address
            reason = getattr(error, "strerror", None) or str(error)
            raise BindError(f"cannot listen on {' '.join(self.bind)}: {reason}") from None


def hypercorn_config(settings: Settings, *, ping_interval: float = PING_INTERVAL,
                     dead_after: int = DEAD_AFTER, listen_fd: int | None = None) -> Config:
    """Hypercorn settings; the same as deploy/hypercorn.toml (checked by a test). A worker
    of `serve --workers` (`listen_fd`) accepts on its parent's socket and on a port of its
    own (the last bind: where other nodes reach it)."""
    config = ServerConfig()
    config.bind = [f"{settings.host}:{settings.port}"]
    if listen_fd is not None:
        config.bind = [f"fd://{listen_fd}", f"{settings.host}:0"]
    if settings.certfile:  # HTTPS and WSS from Hypercorn itself (the lean send path does not attach)
        config.certfile, config.keyfile = settings.certfile, settings.keyfile
    config.graceful_timeout = 1.0
    config.accesslog = None  # app.access logs each request, with the client TRUSTED_PROXIES tell
    # a Logger, not "-": Hypercorn then adds no handler of its own, and its lines go through
    # ours (masked, JSON with LOG_FORMAT=json)
    config.errorlog = logging.getLogger("hypercorn.error")
    config.websocket_ping_interval = ping_interval
    config.read_timeout = dead_after
    # client messages are tiny actions: over 4 KiB is BAD_REQUEST, over this is not even read
    config.websocket_max_message_size = MAX_CLIENT_MESSAGE
    return config


async def serve(settings: Settings, *, app: QuartTrio | None = None,
                shutdown_trigger: Callable[[], Awaitable[None]] = trio.sleep_forever,
                ping_interval: float = PING_INTERVAL, dead_after: int = DEAD_AFTER,
                listen_fd: int | None = None, node_host: str | None = None,
                task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the app under Hypercorn's trio worker; reports the bound addresses.

    When `shutdown_trigger` returns, the app shuts down gracefully (`Shutdown.graceful`:
    every viewer gets `stopped` and a 1001 close, every upstream ends, viewers get
    GOODBYE_WAIT seconds to read their close), then Hypercorn shuts down and this
    returns. It installs no signal handler and never ends the process, so it can run
    embedded (the tests run it in-process); `serve_until_signal` adds that policy.

    Cancellation: cancelling it stops serving at once; the engine still ends and reaps
    every FFmpeg before it returns.
    """
    app = app or create_app(settings)
    config = hypercorn_config(settings, ping_interval=ping_interval, dead_after=dead_after, listen_fd=listen_fd)

    async def shutdown() -> None:
        await shutdown_trigger()
        s: Services = app.extensions["rtsp"]
        await s.shutdown.graceful()

    async def serving(*, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        await hypercorn_serve(app, config, shutdown_trigger=shutdown, task_status=task_status)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(serving)
        s: Services = app.extensions["rtsp"]
        own = binds[-1]  # unless NODE_URL said where other nodes reach it
        if node_host is not None:
            own = f"{urlsplit(own).scheme}://{node_host}:{urlsplit(own).port}"
        s.cluster.locate(own)
        task_status.started(binds)


async def serve_until_signal(settings: Settings) -> int:
    """The process of `rtsp-viewer serve`: the app owns it (`app/process.py`: SIGTERM or
    SIGINT shut it down gracefully, within 5 s); its Shutdown stops the server through
    the trigger. Returns the exit status of a graceful shutdown (0)."""
    app = create_app(settings, own_process=True)
    stopped = trio.Event()
    s: Services = app.extensions["rtsp"]
    s.shutdown.stop_server = stopped.set

    worker = os.environ.get(workers.LISTEN_FD)
    watch = trio.CancelScope()  # a worker's watch on its parent, while it serves

    async def watching() -> None:
        with watch:
            await workers.exit_with_parent(int(os.environ[workers.PARENT]))

    async with trio.open_nursery() as outer:
        if worker:
            outer.start_soon(watching)
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve, settings, app=app, shutdown_trigger=stopped.wait,
                                                listen_fd=int(worker) if worker else None,
                                                node_host=os.environ.get(workers.NODE_HOST) if worker else None))
            log.info("serving on %s", " ".join(binds), extra={"event": "server.serving"})
            if settings.log_format != "json":  # there, every line is a JSON object
                print(f"rtsp-viewer: serving on {' '.join(binds)}", file=sys.stderr, flush=True)
        watch.cancel()
    return 0


async def _operate(args: argparse.Namespace) -> int:
    """`check`, `streams`, `probe` (app/cli/operator.py) and `discover` (app/cli/discover.py)."""
    if args.command == "probe":
        try:
            url = validate_url(args.url)
        except InvalidUrl as error:
            print(f"rtsp-viewer probe: url {error}", file=sys.stderr)
            return 2
        ffmpeg = Settings(ffmpeg_bin=os.environ.get("FFMPEG_BIN", "")).ffmpeg()
        return await operator.probe_camera(ffmpeg, url, args.transport, args.timeout)
    user = os.environ.get("RTSP_VIEWER_USER"), os.environ.get("RTSP_VIEWER_PASSWORD")
    api = operator.Api(args.server, os.environ.get("API_TOKEN") or None,
                       (user[0], user[1] or "") if user[0] else None)
    if args.command == "discover":
        return await discover.run(args, api)
    if args.command == "check":
        return await operator.check(api, args.camera, args.transport)
    return await operator.streams(api, args.action, args.args, args.transport)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rtsp-viewer")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve the REST and WebSocket API")
    run.add_argument("--host", help="bind address (default: HOST or 127.0.0.1)")
    run.add_argument("--port", help="port (default: PORT or 8000; 0 picks one)")
    run.add_argument("--dev", action="store_true", help="development: CORS for all origins, DEBUG logs")
    run.add_argument("--workers", default="1", help="N node processes behind the one port, or auto: one per core")
    server_help = ("the server (default: RTSP_VIEWER_URL or http://127.0.0.1:8000); API_TOKEN, or RTSP_VIEWER_USER "
                   "and RTSP_VIEWER_PASSWORD, from the environment")
    check = commands.add_parser("check", help="check a running server end to end; exit 1 naming the failed step")
    check.add_argument("camera", nargs="?", help="an RTSP URL: create a temporary stream, play it, delete it")
    check.add_argument("--server", default=os.environ.get("RTSP_VIEWER_URL", DEFAULT_SERVER), help=server_help)
    check.add_argument("--transport", choices=list(Transport), default=Transport.TCP)
    manage = commands.add_parser("streams", help="list | add NAME URL | show ID | rm ID, against the API")
    manage.add_argument("action", choices=["list", "add", "show", "rm"])
    manage.add_argument("args", nargs="*")
    manage.add_argument("--server", default=os.environ.get("RTSP_VIEWER_URL", DEFAULT_SERVER), help=server_help)
    manage.add_argument("--transport", choices=list(Transport), default=Transport.TCP)
    look = commands.add_parser("probe", help="connect to a camera: codecs, size, fps, audio, or the error")
    look.add_argument("url")
    look.add_argument("--transport", choices=list(Transport), default=Transport.TCP)
    look.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    users.add_parsers(commands)
    discover.add_parser(commands, os.environ.get("RTSP_VIEWER_URL", DEFAULT_SERVER), server_help)
    args = parser.parse_args(argv)
    if args.command in ("users", "createsuperuser"):
        sys.exit(users.run(args))
    if args.command != "serve":
        sys.exit(trio.run(_operate, args))
    given = {"HOST": args.host, "PORT": args.port}  # checked as the variables are
    if args.dev:
        given |= {"CORS_ORIGINS": "*", "LOG_LEVEL": "DEBUG"}
    settings = load_or_exit({**os.environ, **{k: v for k, v in given.items() if v is not None}})
    configure(settings.log_level, settings.log_format)
    try:
        count = workers.worker_count(args.workers)
    except ValueError as error:
        print(f"rtsp-viewer: {error}", file=sys.stderr)
        sys.exit(2)
    if count > 1:
        sys.exit(workers.run_workers(count, settings, os.environ))
    try:
        sys.exit(trio.run(serve_until_signal, settings))
    except* BindError as group:
        failure = first_of(group)
    print(f"rtsp-viewer: {failure}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
