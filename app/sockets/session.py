"""`/ws/stream` (SPEC §4) and `/ws/stream.ts` (stock players): one viewer per socket.

Served from ASGI by `app/sockets/asgi.py`, not through Quart (a fifth of a viewer's memory).
Each socket has two tasks in one nursery: the reader, which handles the client's
actions, and the writer, the only task that sends, which drains the viewer's queue
(status, errors, media). Under Hypercorn the hub's fan-out may also write media at once
through the socket's `Wire` when the writer has nothing pending (see `app/sockets/wire.py`);
the two never interleave. When the client goes away, the reader cancels the writer;
leaving `open_viewer` detaches it from its upstream. What a socket asks for and the
frames it gets are parsed and made in `app/sockets/messages.py`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial

import attrs
import trio
from quart import Blueprint
from quart.typing import ResponseReturnValue

from supervisors import (
    Action,
    Close,
    CloseCode,
    ErrorCode,
    Event,
    Failure,
    Phase,
    Status,
    Unfinished,
    Viewer,
    media_close_code,
)
from supervisors.classify import GENERIC

from ..accounts.sessions import from_cookies
from ..counts import SendPath
from ..errors import ApiError, error_body
from ..logs import next_id
from ..policy import admission
from ..policy.admission import Door, Knock, Need, Refused, admit, door, rechecked
from ..policy.limits import Limited
from ..policy.tokens import basic, bearer, from_protocols
from ..services import Services
from ..store import StorageError
from ..targets import format_refused, stream_label
from .asgi import Disconnected, Handler, Socket
from .messages import Target, event_json, parse_action, parse_query
from .wire import NoWire, Wire, decline_deflate

log = logging.getLogger(__name__)
PATHS = ("/ws/stream", "/ws/stream.ts")
# a viewer of the stream `?id=` names (a `?url=` source: API_TOKEN only); a token may also
# be `?token=` or a `bearer.<token>` subprotocol: browsers cannot set a socket's headers
DOOR = Door(Need.WATCH, holds=True, query_token=True)
blueprint = Blueprint("ws", __name__)  # only what a plain HTTP request to a socket's path gets


Send = Callable[[str | bytes], Awaitable[None]]
OnEvent = Callable[[Event, "Accepted"], Awaitable[bool]]  # True: the socket is done


@attrs.frozen
class Accepted:
    target: Target | Failure  # what the socket watches, or why it cannot
    close_code: CloseCode  # for that failure
    wire: Wire | None
    send: Send
    client: str  # its address, for the logs
    key: str  # what the limits count it by (`limits.limit_key`)
    socket: Socket
    recheck: Callable[[], Awaitable[ErrorCode | None]] | None = None  # a user's: may it still watch?


async def _accept(s: Services, held: ExitStack, socket: Socket) -> Accepted | None:
    """Admit and accept the socket: who it is, what it watches (or why it cannot), and how
    to send on it; its connection share is held in `held`. None: refused before the
    handshake (a Host outside ALLOWED_HOSTS gets an HTTP 400 instead of a socket)."""
    args = socket.args()
    target = parse_query(args)
    token, protocol = from_protocols(socket.header("Sec-WebSocket-Protocol"))
    knock = Knock(socket=True, method="GET", host=socket.header("Host"), origin=socket.header("Origin"),
                  peer=socket.remote_addr, forwarded_for=tuple(socket.headers("X-Forwarded-For")),
                  token=args.get("token") or bearer(socket.header("Authorization")) or token,
                  basic=basic(socket.header("Authorization")), session=from_cookies(socket.header("Cookie")),
                  stream_id=target.stream_id if isinstance(target, Target) else None,
                  by_url=isinstance(target, Target) and target.source is not None)
    decision = await admit(DOOR, knock, s)
    close_code = CloseCode.POLICY
    if isinstance(decision, Refused):
        if decision.handshake:
            await socket.reject(decision.status, error_body(decision.code, decision.message))
            return None
        target = Failure(decision.code, decision.message) if isinstance(decision.code, ErrorCode) else \
            Failure(ErrorCode.STREAM_ERROR, decision.message)  # storage: who asks cannot be checked
        if decision.status >= 500:
            close_code = CloseCode.INTERNAL
    else:
        held.callback(decision.release)
    try:
        if isinstance(target, Target) and target.stream_id is not None and await target.resolve(s.store) is None:
            target = Failure(ErrorCode.NOT_FOUND, f"no stream {target.stream_id}")
    except StorageError:
        target, close_code = Failure(ErrorCode.STREAM_ERROR, "storage is unavailable"), CloseCode.INTERNAL
    decline_deflate(socket.send_event)
    await socket.accept(subprotocol=protocol)
    try:
        wire: Wire | None = await Wire.attach(socket.send_event)
    except NoWire as why:
        wire = None
        s.send_path.fell_back(str(why))
    else:
        s.send_path.attached()
    recheck = None if isinstance(decision, Refused) else rechecked(knock, decision, s)
    return Accepted(target, close_code, wire, socket.send if wire is None else wire.send, decision.client,
                    decision.key, socket, recheck)


async def _serve(s: Services, accepted: Accepted, on_event: OnEvent, *, actions: bool) -> None:
    """One viewer for this socket: its writer sends media and hands events to `on_event`;
    the reader handles the client's actions, or (`actions=False`) starts at once and
    discards what the client sends."""
    target, wire = accepted.target, accepted.wire
    assert isinstance(target, Target)
    if target.source is not None:  # played by URL: errors must not tell ports and hosts apart
        on_event = _generic(on_event)
    with s.registry.open_viewer(accepted.key) as viewer, s.metrics.sending(SendPath.ASGI if wire is None else SendPath.WIRE):
        if wire is not None:
            viewer.express = wire.express
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_write, viewer, nursery.cancel_scope, accepted, on_event)
                if accepted.recheck is not None:
                    nursery.start_soon(_keep_checking, viewer, accepted.recheck)
                await _read(viewer, target, s, accepted.socket, nursery.cancel_scope, actions=actions)
        finally:
            if wire is not None:
                wire.end()


async def stream_socket(s: Services, socket: Socket) -> None:
    """The protocol of SPEC §4: JSON status and errors, actions, binary MPEG-TS."""
    with ExitStack() as held, s.metrics.socket("/ws/stream"):
        if (accepted := await _accept(s, held, socket)) is None:
            return
        held.enter_context(_logged(socket.path, accepted))
        if isinstance(accepted.target, Failure):
            await accepted.send(event_json(accepted.target))
            await socket.close(accepted.close_code, accepted.target.code)
            return
        await accepted.send(event_json(Status(Phase.CONNECTED)))
        await _serve(s, accepted, _as_json, actions=True)


async def media_socket(s: Services, socket: Socket) -> None:
    """For stock players (mpegts.js, JSMpeg-style loaders): plays at once and sends only
    binary MPEG-TS; a failure closes it with 4000 + its HTTP status and the error code as
    the reason (HTTP_STATUS); status is left to REST."""
    with ExitStack() as held, s.metrics.socket("/ws/stream.ts"):
        if (accepted := await _accept(s, held, socket)) is None:
            return
        held.enter_context(_logged(socket.path, accepted))
        if isinstance(accepted.target, Failure):
            await socket.close(media_close_code(accepted.target.code), accepted.target.code)
            return
        await _serve(s, accepted, _as_close, actions=False)


def handlers(s: Services) -> dict[str, Handler]:
    """The sockets of this module by path, for `asgi.route`."""
    return dict(zip(PATHS, (partial(stream_socket, s), partial(media_socket, s)), strict=True))


@blueprint.route(PATHS[0], strict_slashes=False)
@blueprint.route(PATHS[1], strict_slashes=False)
@door(Need.PUBLIC)
async def not_a_websocket() -> ResponseReturnValue:
    """A plain HTTP request to a socket's path: 400, saying how to open it."""
    raise ApiError(400, ErrorCode.BAD_REQUEST, "this is a WebSocket endpoint: open it with a WebSocket "
                   "handshake (Upgrade: websocket), or GET /api/streams/{id}/stream.ts over HTTP")


@contextmanager
def _logged(endpoint: str, accepted: Accepted) -> Iterator[None]:
    """An access line when the socket opens (or is refused) and one when it ends."""
    target = accepted.target
    fields: dict[str, object] = {"client": accepted.client, "connection": next_id("c"), "path": endpoint}
    if isinstance(target, Failure):
        log.info("%s refused: %s", endpoint, target.code, extra={"event": "ws.refused", "code": target.code, **fields})
        yield
        return
    fields["stream"] = stream_label(target.key)
    log.info("%s opened", endpoint, extra={"event": "ws.opened", **fields})
    started = trio.current_time()
    try:
        yield
    finally:
        log.info("%s closed", endpoint, extra={"event": "ws.closed", **fields,
                                                "duration_ms": round((trio.current_time() - started) * 1000)})


async def _keep_checking(viewer: Viewer, still: Callable[[], Awaitable[ErrorCode | None]]) -> None:
    """A user's socket plays while the user may watch it: every `admission.RECHECK` seconds its
    credentials are looked at again, and a session that ended (logout, a new password,
    the user removed, expiry) or a stream no longer granted ends the socket with its
    error (UNAUTHORIZED, NOT_FOUND), as a refusal at the handshake would have."""
    while True:
        await trio.sleep(admission.RECHECK)
        if (code := await still()) is not None:
            why = "the session ended" if code is ErrorCode.UNAUTHORIZED else "no longer granted to this user"
            viewer.notify(Failure(code, why))
            viewer.notify(Close(CloseCode.POLICY, code))
            return


def _generic(on_event: OnEvent) -> OnEvent:
    """Upstream failures with one message per code (GENERIC); FFmpeg's text, masked, is
    in the server's log only."""

    async def generic(event: Event, accepted: Accepted) -> bool:
        if isinstance(event, Failure) and event.code in GENERIC:
            event = Failure(event.code, GENERIC[event.code])
        return await on_event(event, accepted)

    return generic


async def _as_json(event: Event, accepted: Accepted) -> bool:
    if isinstance(event, Close):
        await accepted.socket.close(event.code, event.reason)
        return True
    await accepted.send(event_json(event))
    return False


async def _as_close(event: Event, accepted: Accepted) -> bool:
    if isinstance(event, Failure):
        await accepted.socket.close(media_close_code(event.code), event.code)
        return True
    if isinstance(event, Close):
        await accepted.socket.close(event.code, event.reason)
        return True
    return False  # status and media type: the REST view has them


async def _write(viewer: Viewer, done: trio.CancelScope, accepted: Accepted, on_event: OnEvent) -> None:
    while not await _send_next(viewer, accepted, on_event):
        pass
    done.cancel()


async def _send_next(viewer: Viewer, accepted: Accepted, on_event: OnEvent) -> bool:
    """Send the viewer's next item; True when the socket is done. Its own frame, so that
    nothing of the item is kept while the writer waits for the next one: with the express
    lane a writer may wait for minutes, and the item it sent last may be the joiner's
    whole GOP (about 250 KB a viewer at 2 Mbit/s, measured with tracemalloc)."""
    item: bytes | Event | Unfinished = await viewer.next()
    if isinstance(item, bytes):
        await accepted.send(item)
    elif isinstance(item, Unfinished):
        assert accepted.wire is not None  # only the wire's express lane makes them
        await accepted.wire.finish(item)
    else:
        return await on_event(item, accepted)
    return False


async def _read(viewer: Viewer, target: Target, s: Services, socket: Socket, done: trio.CancelScope, *,
                actions: bool) -> None:
    """The client's side of the socket until it goes away; then the writer is cancelled
    (`done`) and the viewer leaves its upstream at once, even if the writer was still
    stuck sending to a peer that stopped reading."""
    try:
        if actions:
            await _handle_actions(viewer, target, s, socket)
        else:
            await _start(viewer, target, s)
            while True:  # read (the client may send anything), so its close is seen
                await socket.receive()
    except Disconnected:
        done.cancel()
    finally:
        s.registry.forget(viewer)


async def _handle_actions(viewer: Viewer, target: Target, s: Services, socket: Socket) -> None:
    """The client's actions, each spending a RATE_LIMIT token; a socket that has sent no
    start START_WITHIN seconds after it opened is closed (BAD_REQUEST)."""
    client = viewer.client
    deadline = trio.current_time() + s.settings.start_within
    while True:
        message: str | bytes | None = None
        with trio.move_on_at(deadline):
            message = await socket.receive()
        if message is None:  # the deadline passed
            viewer.notify(Failure(ErrorCode.BAD_REQUEST, f"no start within {s.settings.start_within:g} s"))
            viewer.notify(Close(CloseCode.POLICY, ErrorCode.BAD_REQUEST))
            await trio.sleep_forever()  # the writer closes the socket and ends us
        try:
            s.rates.take(client)
        except Limited as limited:
            viewer.notify(Failure(ErrorCode.RATE_LIMITED, f"{limited}: retry in {limited.retry_after_header} s"))
            continue
        action = parse_action(message)
        if isinstance(action, Failure):
            viewer.notify(action)
        elif action is Action.STOP:
            if viewer.key is None:
                viewer.notify(Status(Phase.STOPPED))
            else:
                s.registry.detach(viewer)
        elif action is Action.RECONNECT:
            _reconnect(viewer, s)
        else:
            deadline = math.inf
            await _start(viewer, target, s)


def _reconnect(viewer: Viewer, s: Services) -> None:
    """Restart the upstream this socket's viewer watches (every viewer of it sees
    `connecting`, then `playing`); one that watches nothing restarts nothing."""
    if viewer.key is None:
        viewer.notify(Failure(ErrorCode.BAD_REQUEST, "reconnect restarts the stream this socket plays, "
                                                     "and it plays none: send start first"))
    elif not s.registry.reconnect(viewer) and viewer.announced:
        viewer.notify(Status(Phase.PLAYING))  # coalesced with a restart that just ran


async def _start(viewer: Viewer, target: Target, s: Services) -> None:
    """Attach the viewer to the target's upstream, from its record as it is now: read and
    attached while the record is held still (an edit of it waits, `Services.edits`)."""
    async with s.editing(target.stream_id):
        try:
            source = await target.resolve(s.store)
        except StorageError:
            viewer.notify(Failure(ErrorCode.STREAM_ERROR, "storage is unavailable"))
            return
        if source is None:
            viewer.notify(Failure(ErrorCode.NOT_FOUND, f"no stream {target.stream_id}"))
            if viewer.key is not None:
                s.registry.detach(viewer)
            viewer.notify(Close(CloseCode.POLICY, ErrorCode.NOT_FOUND))
            return
        if (refused := format_refused(target.format, source)) is not None:
            viewer.notify(refused)
            return
        viewer.format = target.format
        try:
            s.registry.attach(viewer, target.key, source)
        except Failure as failure:
            viewer.notify(failure)
