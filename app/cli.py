"""`rtsp-viewer serve [--host --port]`: the app under Hypercorn's trio worker, embedded.

On SIGTERM/SIGINT: every viewer gets `stopped` and a 1001 close, every upstream ends
(SIGTERM to FFmpeg, SIGKILL after 2 s, reaped), and the process exits within 5 s.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from functools import partial

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from quart_trio import QuartTrio

from .factory import create_app
from .logs import configure
from .services import Services
from .settings import Settings, load_or_exit

log = logging.getLogger(__name__)
GOODBYE_WAIT = 1.0  # seconds viewers get to receive their close frames


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.graceful_timeout = 1.0
    config.accesslog = None
    config.websocket_ping_interval = 10.0
    return config


async def _until_signal(app: QuartTrio) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            break
    s: Services = app.extensions["rtsp"]
    s.registry.shutdown()
    with trio.move_on_after(GOODBYE_WAIT):
        await s.registry.wait_no_viewers()


async def serve(settings: Settings, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    app = create_app(settings)
    config = hypercorn_config(settings)

    async def announce(*, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        await hypercorn_serve(app, config, shutdown_trigger=partial(_until_signal, app),  # type: ignore[arg-type]
                              task_status=task_status)

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(announce)
        log.info("serving on %s", " ".join(binds))
        print(f"rtsp-viewer: serving on {' '.join(binds)}", file=sys.stderr, flush=True)
        task_status.started(binds)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rtsp-viewer")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve the REST and WebSocket API")
    run.add_argument("--host", help="bind address (default: HOST or 127.0.0.1)")
    run.add_argument("--port", type=int, help="port (default: PORT or 8000; 0 picks one)")
    args = parser.parse_args(argv)
    settings = load_or_exit()
    if args.host is not None:
        settings = attrs.evolve(settings, host=args.host)
    if args.port is not None:
        settings = attrs.evolve(settings, port=args.port)
    configure(settings.log_level, settings.log_format)
    trio.run(serve, settings)


if __name__ == "__main__":
    main()
