"""The app as the owner of its process, and the end of serving: the same under
`rtsp-viewer serve` and plain `hypercorn`.

`raise_fd_limit`: each viewer holds a socket and each upstream three pipes, so a process
the app owns raises its soft open-file limit to the hard one before it serves.

`Shutdown.graceful` is the contract of SPEC §4: every viewer gets `stopped` and a 1001
close, every upstream ends (SIGTERM to FFmpeg, SIGKILL after 2 s, reaped), and viewers get
GOODBYE_WAIT seconds to read their close. Three things start it, whichever comes first:

- SIGTERM or SIGINT to a process the app owns (`own_process`: `rtsp-viewer serve`, and
  `app.asgi` under Hypercorn): the app's lifespan holds the signal handlers, runs the
  graceful part, then stops the server: `rtsp-viewer serve` through its trigger, plain
  Hypercorn through its worker's own `terminate` event (as when `max_requests` is
  reached; found behind the first connection, like `terminated` below), or, before any
  connection has shown it, as it stops on Ctrl+C (KeyboardInterrupt in its main task:
  that needs SIGINT not to be ignored, which a background job of a script inherits);
- Hypercorn's own shutdown (`follow`): with `workers` of 1 or more, Hypercorn's parent
  process takes the signal and tells the worker, which begins its shutdown
  (WorkerContext.terminated, found behind the first connection) and gives connections
  `graceful_timeout` to finish; the viewers are told then;
- the trigger of an embedded `cli.serve` (the tests), which installs no signal handler.

A process the app owns exits within 5 s of the signal: if connections still hold it
EXIT_DEADLINE seconds after, it ends the process anyway (FFmpeg reaped first) with status
EXIT_FORCED.

Cancellation: `graceful` is a checkpoint; cancelled, the viewers have been told and the
upstreams are ending (the registry's nursery reaps them).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from supervisors import Registry

log = logging.getLogger(__name__)
GOODBYE_WAIT = 1.0  # seconds viewers get to receive their close frames
EXIT_DEADLINE = 4.0  # seconds after the signal when a stuck connection no longer holds us
EXIT_FORCED = 1  # the exit status when it did
SIGNALS = (signal.SIGTERM, signal.SIGINT)


try:
    import resource
except ImportError:  # Windows: no open-file limit of this kind (sockets are not descriptors there)
    resource = None  # type: ignore[assignment]
NO_FD_LIMIT = 8192  # what the socket cap counts with where there is no such limit


def open_file_limit() -> int:
    """The soft limit on open files (NO_FD_LIMIT where the system has none)."""
    return NO_FD_LIMIT if resource is None else resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one; the new soft limit."""
    if resource is None:
        return NO_FD_LIMIT
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, error)
    return soft


@trio.lowlevel.enable_ki_protection
def interrupt_main_task() -> None:
    """Stop plain Hypercorn as Ctrl+C does: a KeyboardInterrupt for trio's main task
    (Hypercorn's worker, which then ends its connections and the app's lifespan). Does
    nothing where SIGINT is ignored (a Hypercorn worker process: its parent stops it)."""
    if signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, signal.SIG_DFL, None):
        signal.raise_signal(signal.SIGINT)


class Shutdown:
    """See module docstring."""

    def __init__(self, registry: Registry, *, own_process: bool,
                 leave: Callable[[], Awaitable[None]] = trio.lowlevel.checkpoint) -> None:
        """`leave`: this node leaves its cluster (its camera leases end at once)."""
        self._registry = registry
        self._leave = leave
        self.own_process = own_process
        self.stop_server: Callable[[], None] = self._stop_hypercorn
        self._hypercorn: Any = None  # the Hypercorn WorkerContext behind the connections, once seen
        self._begun = trio.Event()
        self._told = trio.Event()  # viewers told, upstreams ending, goodbye wait over
        self._nursery: trio.Nursery | None = None
        self._following = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """For the app's lifespan: own SIGTERM and SIGINT (`own_process`) and follow
        Hypercorn's shutdown (`follow`) until the app stops serving."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.own_process:
                await nursery.start(self._on_signals)
            task_status.started()
            await trio.sleep_forever()

    async def graceful(self) -> None:
        """Tell every viewer, end every upstream, wait GOODBYE_WAIT at most for the viewers
        to go; once, whoever asks (later callers wait for the first)."""
        if self._begun.is_set():
            await self._told.wait()
            return
        self._begun.set()
        if self.own_process and self._nursery is not None:
            self._nursery.start_soon(self._exit_if_stuck)
        try:
            self._registry.shutdown()  # stopped + 1001 to every viewer; every FFmpeg is being ended
            await self._leave()  # other nodes take this one's cameras over now (1 s at most)
            with trio.move_on_after(GOODBYE_WAIT):
                await self._registry.wait_no_viewers()
        finally:  # cancelled too: whoever waits for it must not wait for ever
            self._told.set()

    def follow(self, send: Any) -> None:
        """Start `graceful` when the Hypercorn worker behind this connection's ASGI send
        begins its shutdown, and remember that worker to stop it (`_stop_hypercorn`);
        once per app, a no-op outside Hypercorn's trio worker."""
        if self._following or self._nursery is None:
            return
        context = _worker_context(send)
        if context is not None:
            self._following = True
            self._hypercorn = context
            self._nursery.start_soon(self._graceful_when, context.terminated)

    def _stop_hypercorn(self) -> None:
        """Stop plain Hypercorn (see module docstring)."""
        if self._hypercorn is not None and self._nursery is not None:
            self._nursery.start_soon(self._hypercorn.terminate.set)
        else:
            interrupt_main_task()

    async def _graceful_when(self, terminated: Any) -> None:
        await terminated.wait()
        await self.graceful()

    async def _on_signals(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(*SIGNALS) as signals:
            task_status.started()
            async for signum in signals:
                log.info("received %s: shutting down", signal.Signals(signum).name, extra={"event": "server.stopping"})
                break
        await self.graceful()
        self.stop_server()

    async def _exit_if_stuck(self) -> None:
        """The 5-second promise: a client stuck in a (shielded) send must not hold the exit."""
        await trio.sleep(EXIT_DEADLINE)
        with trio.move_on_after(5.0 - EXIT_DEADLINE - 0.2):  # FFmpeg first: never leave one behind
            await self._registry.wait_no_upstreams()
        log.warning("connections still open %g s after the signal: exiting anyway (status %d)",
                    EXIT_DEADLINE, EXIT_FORCED)
        logging.shutdown()
        os._exit(EXIT_FORCED)


def _worker_context(send: Any) -> Any:
    """Hypercorn 0.18's WorkerContext behind an ASGI send (HTTP or WebSocket stream →
    protocol → TCPServer), with its `terminate` and `terminated` events; or None."""
    stream = getattr(send, "__self__", None)
    protocol = getattr(getattr(stream, "send", None), "__self__", None)
    server = getattr(getattr(protocol, "send", None), "__self__", None)
    context = getattr(server, "context", None)
    events = (getattr(context, "terminate", None), getattr(context, "terminated", None))
    if all(callable(getattr(event, "wait", None)) and callable(getattr(event, "set", None)) for event in events):
        return context
    return None
