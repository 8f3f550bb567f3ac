"""A viewer's queue: order, restarts, the byte budget and the keyframe rule.

Unit tests on the autojump clock with a fake media process, and a property test that
drives a hub and its viewer through random interleavings of media, statuses, errors,
restarts, stops, slow reads, time and a socket that takes frames whole, in part or not
at all, checking what the socket would send after every step.
"""

from __future__ import annotations

import itertools

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisors import CloseCode, EngineConfig, ErrorCode, Failure, Phase, Registry, Source, Status
from supervisors.events import Close
from supervisors.hub import Hub
from supervisors.media.mpegts import PACKET
from supervisors.viewer import Unfinished, Viewer
from tests.fakes import ATTEMPT, FakeSource, frame, frame_number, pat, pmt

URL = Source("rtsp://cam/live")
PAT_PID, PMT_PID = 0, 0x1000
PLAYING, CONNECTING, STOPPED = (Status(p) for p in (Phase.PLAYING, Phase.CONNECTING, Phase.STOPPED))


def packets(data: bytes) -> list[bytes]:
    return [data[i : i + PACKET] for i in range(0, len(data), PACKET)]


def pid(packet: bytes) -> int:
    return (packet[1] & 0x1F) << 8 | packet[2]


async def take_all(viewer: Viewer) -> list[object]:
    """What the socket's writer sends until the queue is empty."""
    taken = []
    while True:
        with trio.move_on_after(0.001) as waited:
            taken.append(await viewer.next())
        if waited.cancelled_caught:
            return taken


@pytest.mark.parametrize("chunks", [1, 2, 3, 200])
@pytest.mark.parametrize("event", [Failure(ErrorCode.TIMEOUT, "late"), CONNECTING, STOPPED],
                         ids=["error", "connecting", "stopped"])
async def test_an_event_queued_behind_media_arrives_after_all_of_it(
        chunks: int, event: object, autojump_clock: trio.testing.MockClock) -> None:
    viewer = Viewer("c", budget=1 << 24)
    before = [frame(i, key=i == 0) for i in range(chunks)]
    for chunk in before:
        assert viewer.offer(chunk)
    viewer.notify(event)  # type: ignore[arg-type]
    viewer.offer(frame(chunks, key=False))
    taken = await take_all(viewer)
    assert taken[0] == PLAYING
    at = taken.index(event)
    assert all(isinstance(t, bytes) for t in taken[1:at])
    assert b"".join(taken[1:at]) == b"".join(before)  # type: ignore[arg-type]
    after = [PLAYING] if event in (CONNECTING, STOPPED) else []  # announced again after those
    assert taken[at + 1 :] == [*after, frame(chunks, key=False)]


async def test_a_restart_with_a_backlog_sends_connecting_then_only_the_new_attempt(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """A viewer that has 2 s of media queued when its upstream restarts: after
    `connecting`, not a byte of the old FFmpeg; the new media starts with PAT, PMT and a
    keyframe of the new attempt."""
    fake = FakeSource(["play"])
    registry = Registry(EngineConfig(ffmpeg="unused"), runner=fake.runner)
    await nursery.start(registry.run)
    with registry.open_viewer("c") as viewer:
        registry.attach(viewer, "k", URL)
        first = await take_all(viewer)  # plays a while, then stops reading
        assert first[:2] == [CONNECTING, PLAYING]
        await trio.sleep(2)
        assert viewer.statistics().queued_bytes > 20 * PACKET
        registry.restart("k")
        await trio.sleep(1.5)
        taken = await take_all(viewer)
    assert taken[:2] == [CONNECTING, PLAYING], taken[:3]
    media = b"".join(t for t in taken[2:] if isinstance(t, bytes))
    assert all(isinstance(t, bytes) for t in taken[2:])
    got = packets(media)
    assert [pid(p) for p in got[:2]] == [PAT_PID, PMT_PID]
    numbers = [n for p in got if (n := frame_number(p)) is not None]
    assert numbers and all(n >= ATTEMPT for n in numbers), "a byte of the old attempt came after `connecting`"
    assert numbers[0] == ATTEMPT  # its first frame: a keyframe
    assert len(fake.starts) == 2


async def test_an_error_never_overtakes_the_media_queued_before_it(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """The upstream plays 3 s, then goes silent: TIMEOUT at 8 s. A viewer that stopped
    reading at 1 s gets every frame of those 3 s, then the error."""
    fake = FakeSource(["freeze:3", "play"])
    registry = Registry(EngineConfig(ffmpeg="unused", ffmpeg_timeout=5), runner=fake.runner)
    await nursery.start(registry.run)
    with registry.open_viewer("c") as viewer:
        registry.attach(viewer, "k", URL)
        await trio.sleep(1)
        early = await take_all(viewer)
        await trio.sleep(7.5)  # the error is queued behind 2 s of media
        assert viewer.statistics().queued_bytes > 0
        late = await take_all(viewer)
    taken = early + late
    errors = [i for i, t in enumerate(taken) if isinstance(t, Failure)]
    assert len(errors) == 1 and taken[errors[0]].code == ErrorCode.TIMEOUT  # type: ignore[attr-defined]
    before = b"".join(t for t in taken[: errors[0]] if isinstance(t, bytes))
    numbers = [n for p in packets(before) if (n := frame_number(p)) is not None]
    assert sorted(set(numbers)) == list(range(fake.frames)), "media published before the error is missing"
    assert not any(isinstance(t, bytes) for t in taken[errors[0] :])


# --- the property test -------------------------------------------------------------------

BUDGET = 16 * PACKET


@attrs.define
class Socket:
    """The viewer's socket as the tests see it: what was sent, in order, and the checks."""

    viewer: Viewer
    sent: list[object] = attrs.Factory(list)  # events, and media as it went on the wire
    holding: bool = False  # the writer has an item it has not finished sending
    mode: str = "part"  # the express lane: take whole, take "part", or "refuse"
    rest: memoryview | None = None  # what an express write in part left

    def express(self, media: bytes) -> bool | Unfinished:
        assert not self.holding and self.rest is None, "express while the writer holds an item"
        if self.mode == "refuse":
            return False
        if self.mode == "whole":
            self.sent.append(media)
            return True
        cut = len(media) // 2 + 1
        self.sent.append(media[:cut])
        self.rest = memoryview(media)[cut:]
        return Unfinished(self.rest)

    def read(self, count: int) -> None:
        """The writer takes `count` items, each sent before the next is taken."""
        for _ in range(count):
            try:
                item = self.viewer.next_nowait()
            except trio.WouldBlock:
                self.holding = False
                return
            self.holding = True
            if self.rest is not None:  # a frame begun on the wire is finished first
                assert isinstance(item, Unfinished) and item.rest is self.rest, item
                self.sent.append(bytes(self.rest))
                self.rest = None
                continue
            assert not isinstance(item, Unfinished)
            self.sent.append(item)


@attrs.define
class Model:
    """What the test did, to check what the socket sent against."""

    attempt: int = 0
    number: itertools.count[int] = attrs.Factory(itertools.count)
    errors: list[Failure] = attrs.Factory(list)  # errors queued while subscribed, in order
    connecting: list[int] = attrs.Factory(list)  # attempts announced to the viewer, in order


def check(socket: Socket, model: Model, *, drained: bool) -> None:
    viewer = socket.viewer
    stats = viewer.statistics()
    assert stats.queued_bytes <= BUDGET
    assert stats.queued_bytes == sum(len(i) for i in viewer._items if isinstance(i, bytes))
    # split what was sent into events and media runs; check each run's packets
    announced = False
    synced = False
    last: int | None = None  # the frame number of the last packet of media
    packet_run = b""
    after_slow = False
    errors: list[Failure] = []
    connecting = 0
    floor = 0  # no frame of an attempt before this one may come any more

    def media_packets(run: bytes) -> None:
        nonlocal last, synced
        assert len(run) % PACKET == 0, "media sent in less than whole packets"
        got = packets(run)
        for i, packet in enumerate(got):
            number = frame_number(packet)
            if number is None:
                continue
            assert number // ATTEMPT >= floor, "a frame of an earlier attempt after `connecting`"
            if packet[1] & 0x40:  # a frame starts
                if not (synced and last is not None and number == last + 1):  # no gap: a keyframe
                    assert packet[3] & 0x20 and packet[5] & 0x40, f"frame {number} after {last}: not a keyframe"
                    assert i >= 2 and [pid(got[i - 2]), pid(got[i - 1])] == [PAT_PID, PMT_PID]
                synced = True
            else:
                assert number == last, "a frame torn apart"
            last = number

    for item in socket.sent:
        if isinstance(item, bytes):
            assert not after_slow, "media after SLOW_CONSUMER"
            assert announced, "media before `playing`"
            packet_run += item
            continue
        if packet_run and len(packet_run) % PACKET == 0:
            media_packets(packet_run)
            packet_run = b""
        assert not packet_run, "an event inside a frame"
        if isinstance(item, Close):
            assert after_slow and item.code == CloseCode.POLICY
            continue
        assert not after_slow, f"{item} after SLOW_CONSUMER"
        if item == PLAYING:
            announced = True
        elif item in (CONNECTING, STOPPED):
            announced = synced = False
            last = None
            if item == CONNECTING:
                floor = model.connecting[connecting]
                connecting += 1
        elif isinstance(item, Failure) and item.code == ErrorCode.SLOW_CONSUMER:
            after_slow = True
        else:
            assert isinstance(item, Failure)
            errors.append(item)
    if packet_run and (len(packet_run) % PACKET == 0 or drained):
        media_packets(packet_run)
    assert errors == model.errors[: len(errors)], "errors out of order or lost"
    if drained:
        assert not viewer.statistics().queued_items
        assert errors == model.errors or stats.slow
        assert connecting == len(model.connecting) or stats.slow


OPERATIONS = {  # weight, arguments
    "frame": (12, st.tuples(st.booleans(), st.integers(1, 6))),  # media most of the time
    "read": (4, st.tuples(st.integers(0, 3))),
    "drain": (2, st.tuples()),  # the writer catches up and waits: idle, express may write
    "lane": (2, st.tuples(st.sampled_from(["whole", "part", "refuse"]))),
    "error": (1, st.tuples()),
    "restart": (1, st.tuples()),
    "tick": (1, st.tuples(st.sampled_from([0.5, 3.0, 11.0]))),
    "stop": (1, st.tuples()),
    "start": (1, st.tuples()),
}
operation = st.sampled_from([name for name, (weight, _) in OPERATIONS.items() for _ in range(weight)]).flatmap(
    lambda name: OPERATIONS[name][1].map(lambda args: (name, *args)))
operations = st.lists(operation, min_size=10, max_size=150)


@settings(max_examples=500, deadline=None)
@given(operations)
def test_any_interleaving_keeps_order_budget_and_keyframes(ops: list[tuple[object, ...]]) -> None:
    now = [0.0]
    hub = Hub(on_slow=lambda v: hub.detach(v))
    viewer = Viewer("c", budget=BUDGET, clock=lambda: now[0])
    socket = Socket(viewer)
    viewer.express = socket.express
    model = Model()
    hub.attach(viewer)
    attached = True
    for op in ops:
        match op:
            case ("frame", key, size):
                number = model.attempt * ATTEMPT + next(model.number)
                hub.publish((pat() + pmt() if key else b"") + frame(number, key=bool(key), size=int(size)))  # type: ignore[call-overload]
            case ("error",):
                failure = Failure(ErrorCode.STREAM_ERROR, f"error {len(model.errors)}")
                if attached and not viewer.slow:
                    model.errors.append(failure)
                hub.broadcast(failure)
            case ("restart",):
                model.attempt += 1
                model.number = itertools.count()
                if attached and not viewer.slow:
                    model.connecting.append(model.attempt)
                hub.restart()
            case ("read", count):
                socket.read(int(count))  # type: ignore[call-overload]
            case ("drain",):
                socket.read(10_000)
            case ("lane", mode):
                socket.mode = str(mode)
            case ("tick", seconds):
                now[0] += float(seconds)  # type: ignore[arg-type]
            case ("stop",) if attached:
                hub.detach(viewer)
                viewer.stop()
                attached = False
            case ("start",) if not attached and not viewer.slow:
                hub.attach(viewer)
                attached = True
        attached = attached and viewer in hub.viewers
        check(socket, model, drained=False)
    socket.read(10_000)
    check(socket, model, drained=True)
