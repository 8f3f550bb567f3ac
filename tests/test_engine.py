"""The engine on trio's autojump clock with a fake media process: timing and fan-out rules."""

from __future__ import annotations

import errno
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st

from supervisors import EngineConfig, ErrorCode, Failure, Phase, Registry, Source, Status
from supervisors.ffmpeg import ffmpeg_runner
from supervisors.hub import Hub
from supervisors.linger import unwatched_for
from supervisors.media.mpegts import Aligner, Index
from supervisors.viewer import Unfinished, Viewer
from tests.fakes import FakeSource, frame, pat, pmt
from tests.helpers import queued_items, wait_for

URL = Source("rtsp://127.0.0.1/live")  # resolvable: the real runner checks it first


async def start(nursery: trio.Nursery, fake: FakeSource, **config: object) -> Registry:
    registry = Registry(EngineConfig(ffmpeg="unused", **config), runner=fake.runner)  # type: ignore[arg-type]
    await nursery.start(registry.run)
    return registry


async def watch(registry: Registry, client: str, seconds: float) -> None:
    """One viewer of "k" for `seconds`, then gone."""
    with registry.open_viewer(client) as viewer:
        registry.attach(viewer, "k", URL)
        await trio.sleep(seconds)


async def drain(viewer: Viewer, into: list[object]) -> None:
    while True:
        into.append(await viewer.next())


async def timed(viewer: Viewer, log: list[tuple[float, object]]) -> None:
    """What the viewer's socket would send, with the (mock) time it was taken."""
    while True:
        event = await viewer.next()
        log.append((trio.current_time(), event))


async def record(registry: Registry, seconds: float, consume: Callable[[Viewer, Any], Awaitable[None]],
                 log: Any) -> None:
    """One viewer of "k" for `seconds`, its socket's side played by `consume` into log."""
    with registry.open_viewer("c") as viewer:
        registry.attach(viewer, "k", URL)
        async with trio.open_nursery() as inner:
            inner.start_soon(consume, viewer, log)
            await trio.sleep(seconds)
            inner.cancel_scope.cancel()


def phases(log: list[object]) -> list[str]:
    return [e.phase if isinstance(e, Status) else e.code for e in log if isinstance(e, Status | Failure)]


async def test_backoff_doubles_to_30s_with_jitter(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeSource(["refused"])
    registry = await start(nursery, fake)
    await watch(registry, "c", 200)
    gaps = [b - a for a, b in zip(fake.starts, fake.starts[1:], strict=False)]
    for gap, base in zip(gaps, [1, 2, 4, 8, 16, 30, 30, 30], strict=False):
        assert base * 0.8 <= gap <= base * 1.2 + 0.01, gaps


async def test_backoff_starts_over_after_30s_of_healthy_media(nursery: trio.Nursery,
                                                               autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeSource(["refused", "refused", "refused", "play:31", "refused"])
    registry = await start(nursery, fake)
    await watch(registry, "c", 50)
    # failures at ~0, ~1, ~3 (gaps 1, 2), the 4-s wait, 31 s of media, then the first delay again
    assert len(fake.starts) >= 5
    assert 0.8 <= fake.starts[4] - (fake.starts[3] + 31) <= 1.2 + 0.05


async def test_auth_and_not_found_are_not_retried(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    for behaviour, code in (("auth", "AUTH"), ("not_found", "NOT_FOUND")):
        fake = FakeSource([behaviour])
        registry = await start(nursery, fake)
        log: list[object] = []
        await record(registry, 60, drain, log)
        assert len(fake.starts) == 1
        assert phases(log) == ["connecting", code, "stopped"]
        assert registry.status("k").error.code == code  # type: ignore[union-attr]


async def test_watchdog_times_out_a_silent_start_and_a_stalled_stream(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeSource(["stall", "play:3", "stall"])
    registry = await start(nursery, fake, ffmpeg_timeout=10)
    log: list[tuple[float, object]] = []
    with registry.open_viewer("c") as viewer:
        nursery.start_soon(timed, viewer, log)
        t0 = trio.current_time()
        registry.attach(viewer, "k", URL)
        await trio.sleep(9.9)
        assert not any(isinstance(e, Failure) for _, e in log)
        await trio.sleep(0.2)
        timeouts = [t for t, e in log if isinstance(e, Failure) and e.code == "TIMEOUT"]
        assert len(timeouts) == 1 and timeouts[0] - t0 == pytest.approx(10, abs=0.05)
        await trio.sleep(30)
    # the second start plays 3 s of media, then exits (EOF): STREAM_ERROR, retried; the
    # third (and every later one) is silent again
    codes = [e.code for _, e in log if isinstance(e, Failure)]
    assert codes[:3] == ["TIMEOUT", "STREAM_ERROR", "TIMEOUT"]


async def test_stall_while_playing_times_out_after_timeout_without_bytes(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeSource(["freeze:3", "play"])
    registry = await start(nursery, fake, ffmpeg_timeout=5)
    log: list[tuple[float, object]] = []
    with registry.open_viewer("c") as viewer:
        nursery.start_soon(timed, viewer, log)
        registry.attach(viewer, "k", URL)
        await trio.sleep(15)
    failures = [(t, e) for t, e in log if isinstance(e, Failure)]
    assert failures[0][1].code == "TIMEOUT"
    last_media = max(t for t, e in log if isinstance(e, bytes) and t < failures[0][0])
    assert failures[0][0] - last_media == pytest.approx(5, abs=0.1)
    assert failures[0][0] == pytest.approx(3 + 5, abs=0.1)
    assert phases([e for _, e in log]) == ["connecting", "playing", "TIMEOUT", "connecting", "playing"]


async def test_linger_keeps_upstream_for_a_returning_viewer_then_ends_it(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeSource(["play"])
    registry = await start(nursery, fake, linger=5)
    await watch(registry, "a", 2)
    await trio.sleep(4.9)
    assert fake.running == 1 and registry.statistics().running == 1
    with registry.open_viewer("b") as viewer:
        registry.attach(viewer, "k", URL)  # within LINGER: joins, no new process
        await trio.sleep(1)
        assert len(fake.starts) == 1
    left = trio.current_time()
    await wait_for(lambda: not fake.running, within=10, step=0.01)
    assert trio.current_time() - left == pytest.approx(5, abs=0.05)
    assert registry.statistics().running == 0 and len(fake.starts) == 1


async def test_linger_zero_ends_at_once(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeSource(["play"])
    registry = await start(nursery, fake, linger=0)
    await watch(registry, "a", 1)
    await trio.sleep(0.001)
    assert fake.running == 0


async def test_restart_resets_backoff_and_announces_connecting(nursery: trio.Nursery,
                                                               autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeSource(["refused"] * 5 + ["play"])
    registry = await start(nursery, fake)
    with registry.open_viewer("a") as viewer:
        registry.attach(viewer, "k", URL)
        await trio.sleep(20)  # in a long backoff now
        tries = len(fake.starts)
        before = queued_items(viewer)
        assert phases(before).count("connecting") == tries
        registry.restart("k", Source("rtsp://cam/other"))
        await trio.sleep(0.01)
        assert len(fake.starts) == tries + 1  # at once, not after the backoff
        assert fake.sources[-1].url == "rtsp://cam/other"
        assert phases(queued_items(viewer)) == ["connecting", "playing"]  # the new try is announced, and plays


def test_aligner_gives_whole_packets_from_any_split() -> None:
    data = pat() + pmt() + frame(0, key=True) + frame(1, key=False)
    for cut in (1, 100, 187, 188, 189, 500):
        aligner = Aligner()
        out = aligner.feed(b"\x00\x01junk" + data[:cut]) + aligner.feed(data[cut:])
        assert out == data


def test_index_finds_pat_pmt_and_keyframes() -> None:
    index = Index()
    assert index.scan(pat() + pmt()) is None
    assert index.header == pat() + pmt() and index.video_pid == 0x100
    data = frame(1, key=False) + frame(2, key=True)
    assert index.scan(data) == len(frame(1, key=False))


def test_index_falls_back_to_the_idr_nal_without_random_access_flag() -> None:
    index = Index()
    index.scan(pat() + pmt())
    keyframe = bytearray(frame(2, key=True))
    keyframe[3] = 0x10  # payload only: no adaptation field, so no random_access_indicator
    keyframe[4:] = (b"\x00\x00\x01\xe0\x00\x00\x80\x00\x00\x00\x00\x00\x01\x65" + b"\xff" * 200)[:184]
    assert index.scan(bytes(keyframe[:188])) == 0


def test_joining_viewer_gets_header_and_cached_gop_then_live() -> None:
    hub = Hub()
    early = Viewer("a", budget=1 << 20)
    hub.attach(early)
    hub.publish(frame(0, key=False))  # no PAT/PMT/keyframe yet: nothing for anyone
    assert early.statistics().queued_items == 0
    gop = pat() + pmt() + frame(1, key=True)
    hub.publish(gop)
    hub.publish(frame(2, key=False))
    late = Viewer("b", budget=1 << 20)
    hub.attach(late)
    hub.publish(frame(3, key=False))
    expected = pat() + pmt() + frame(1, key=True) + frame(2, key=False) + frame(3, key=False)
    assert _queued(late) == expected
    assert _queued(early) == pat() + pmt() + frame(1, key=True) + frame(2, key=False) + frame(3, key=False)


def test_overflow_drops_queue_and_resumes_at_next_keyframe_then_slow_consumer() -> None:
    now = [0.0]
    hub = Hub()
    viewer = Viewer("a", budget=10 * 188, clock=lambda: now[0])
    hub.attach(viewer)
    hub.publish(pat() + pmt() + frame(0, key=True))  # 6 packets
    hub.publish(frame(1, key=False))  # 4 more: 10, full
    hub.publish(frame(2, key=False))  # overflow: queue dropped, unsynced
    assert viewer.drops == 1 and viewer.statistics().queued_bytes == 0 and not viewer.synced
    hub.publish(frame(3, key=False))  # not a keyframe: still waiting
    assert viewer.statistics().queued_bytes == 0
    hub.publish(frame(4, key=True))  # resumes there; nothing read yet, so not caught up
    assert viewer.statistics().queued_bytes == len(pat() + pmt() + frame(4, key=True))
    now[0] = 5
    for i in range(5, 8):
        hub.publish(frame(i, key=False))  # overflows again: 5 s after the first, not slow yet
    assert viewer.drops == 2 and not viewer.slow
    now[0] = 11
    hub.publish(frame(8, key=True))
    for i in range(9, 12):
        hub.publish(frame(i, key=False))
    assert viewer.slow
    events = queued_items(viewer)
    assert [type(e).__name__ for e in events] == ["Failure", "Close"]
    assert events[0].code == "SLOW_CONSUMER" and events[1].code == 1008  # type: ignore[union-attr]


def _queued(viewer: Viewer) -> bytes:
    """The media the viewer's writer would send now (after its `playing`)."""
    items = [item for item in queued_items(viewer) if item != Status(Phase.PLAYING)]
    assert all(isinstance(item, bytes) for item in items), items
    return b"".join(items)  # type: ignore[arg-type]


async def test_a_stall_after_30s_of_media_starts_the_backoff_over(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeSource(["refused", "refused", "refused", "freeze:31", "refused"])
    registry = await start(nursery, fake, ffmpeg_timeout=5)
    await watch(registry, "c", 60)
    # the fourth run played 31 s, then went silent: TIMEOUT 5 s later, then the first delay again
    assert 0.8 <= fake.starts[4] - (fake.starts[3] + 31 + 5) <= 1.2 + 0.05


async def test_under_load_ffmpeg_output_is_published_in_batches_of_at_most_one_window(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """From `batch_from` viewers on, a read waits up to `batch_window` for what follows:
    half the messages for a source that writes every 40 ms, the same bytes, none late."""
    results = {}
    for batch_from in (2, 1):  # one viewer: below, then at the threshold
        fake = FakeSource(["play"])
        registry = await start(nursery, fake, batch_from=batch_from, batch_window=0.05)
        log: list[tuple[float, object]] = []
        await record(registry, 4, timed, log)
        media = [(t, item) for t, item in log if isinstance(item, bytes)]
        results[batch_from] = media
        await trio.sleep(1)
    plain, batched = results[2], results[1]
    assert len(plain) >= 95 and len(batched) <= len(plain) // 2 + 2
    stream = b"".join(item for _, item in plain)
    joined = b"".join(item for _, item in batched)
    common = min(len(stream), len(joined))
    assert common > 50_000 and stream[:common] == joined[:common]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(batched)]
    assert max(gaps) <= 0.04 + 0.05 + 1e-9  # no frame waits more than the window for the next


class Lane:
    """A stand-in for the edge's express writer: takes what `accept` allows."""

    def __init__(self) -> None:
        self.accept: bool | str = True  # True, False, or "part"
        self.wire: list[bytes] = []

    def __call__(self, media: bytes) -> bool | Unfinished:
        if self.accept == "part":
            self.wire.append(media[:100])
            return Unfinished(media[100:])
        if self.accept:
            self.wire.append(media)
        return bool(self.accept)


async def test_express_lane_is_used_only_when_the_viewer_is_idle_and_keeps_order() -> None:
    viewer = Viewer("c", budget=1 << 20)
    lane = Lane()
    viewer.express = lane
    viewer.offer(b"a")  # not announced yet: `playing` must go first, so it is queued
    assert lane.wire == [] and await viewer.next() == Status("playing") and await viewer.next() == b"a"
    viewer.offer(b"b")  # the writer still holds "a" (not back in `next`): queued behind it
    assert lane.wire == []
    assert await viewer.next() == b"b"
    async with trio.open_nursery() as nursery:
        got: list[object] = []
        nursery.start_soon(drain, viewer, got)  # back in `next`: idle
        await trio.testing.wait_all_tasks_blocked()
        viewer.offer(b"c")
        assert lane.wire == [b"c"] and got == []  # straight to the wire, no task switch
        lane.accept = False  # the socket is full: queued, and the writer takes it
        viewer.offer(b"d")
        viewer.offer(b"e")  # queued behind "d" even if the socket has room again
        lane.accept = True
        assert lane.wire == [b"c"]
        await trio.testing.wait_all_tasks_blocked()
        assert got == [b"de"]
        lane.accept = "part"
        viewer.offer(b"f" * 300)
        assert lane.wire[-1] == b"f" * 100
        viewer.offer(b"g")  # behind the unfinished message, which nothing may pass
        viewer.clear_media()  # an overflow drops media, never half a message
        await trio.testing.wait_all_tasks_blocked()
        assert got == [b"de", Unfinished(b"f" * 200)]
        viewer.notify(Status("stopped"))
        await trio.testing.wait_all_tasks_blocked()
        lane.accept = True
        viewer.offer(b"h")  # not announced again after `stopped`
        assert lane.wire[-1] == b"f" * 100
        nursery.cancel_scope.cancel()


async def test_a_stream_that_failed_for_good_frees_the_clients_slot(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeSource(["auth", "play"])
    registry = await start(nursery, fake, max_streams_per_client=1)
    with registry.open_viewer("c") as viewer:
        registry.attach(viewer, "a", URL)
        await trio.sleep(5)  # AUTH: not retried, the viewer is stopped
        assert viewer.key is None and registry.statistics().running == 0
        registry.attach(viewer, "b", Source("rtsp://cam/other"))  # no LIMIT: the slot is free
        await trio.sleep(1)
        assert registry.status("b").phase == "playing"


@attrs.define
class FailingRun:
    """A media process whose output pipe fails with an OSError mid-attempt."""

    stdout: FailingRun = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.stdout = self

    async def receive_some(self, _max_bytes: int | None = None) -> bytes:
        await trio.sleep(1)
        raise OSError(errno.EMFILE, "Too many open files")

    async def finish(self) -> None:
        pass

    def failure(self) -> Failure:
        raise AssertionError("the OSError is the failure")

    def video(self) -> None:
        return None


@asynccontextmanager
async def failing_runner(source: Source) -> AsyncIterator[FailingRun]:
    yield FailingRun()


@pytest.mark.parametrize(("runner", "message"), [
    (failing_runner, "Too many open files (EMFILE)"),  # the process started: something else failed
    (ffmpeg_runner("/nonexistent/ffmpeg", timeout=5),
     "cannot start /nonexistent/ffmpeg: No such file or directory (ENOENT)"),
])
async def test_an_os_error_in_an_attempt_is_reported_as_what_failed(
        nursery: trio.Nursery, runner: Any, message: str) -> None:
    [camera] = await trio.open_tcp_listeners(0, host="127.0.0.1")  # FFmpeg starts once a camera answers
    port = camera.socket.getsockname()[1]
    registry = Registry(EngineConfig(ffmpeg="unused"),
                        runner=lambda source: runner(Source(f"rtsp://127.0.0.1:{port}/live")))
    await nursery.start(registry.run)
    log: list[object] = []
    async with camera:
        await record(registry, 1.5, drain, log)
    failures = [e for e in log if isinstance(e, Failure)]
    assert failures and failures[0].code == ErrorCode.STREAM_ERROR and failures[0].message == message, failures
    assert registry.status("k").error.message == message  # type: ignore[union-attr]


async def test_a_start_landing_on_the_linger_deadline_keeps_the_upstream(
        autojump_clock: trio.testing.MockClock) -> None:
    """A viewer that attaches in the very tick the linger deadline fires gets the upstream
    (kept, or a new one), never `stopped`. Trio runs the tasks woken in one tick in either
    order, so each of 40 rounds lands the start exactly on the deadline."""
    for _ in range(40):
        async with trio.open_nursery() as nursery:
            fake = FakeSource(["play"])
            registry = await start(nursery, fake, linger=5)
            await watch(registry, "a", 2)
            await trio.sleep_until(trio.current_time() + 5)  # the linger deadline, to the tick
            with registry.open_viewer("b") as viewer:
                registry.attach(viewer, "k", URL)
                await trio.sleep(1)
                assert phases(queued_items(viewer)) in (["playing"], ["connecting", "playing"])
                assert registry.status("k").phase == "playing"
            nursery.cancel_scope.cancel()



@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 1.0, 2.5, 5.0]), st.booleans()), max_size=12))
def test_linger_ends_only_what_has_been_unwatched_for_the_whole_time(changes: list[tuple[float, bool]]) -> None:
    """`unwatched_for(5, ...)` returns only while nothing watches, and only 5 s or more
    after the last viewer left, under any timing of joins and leaves (ties with its own
    deadline included) and any order of the tasks trio runs in one tick (Hypothesis
    seeds trio's scheduler per example); and it does return once nothing watches."""
    events: list[tuple[float, bool | None]] = []  # (when, watched now) or (when, None): it returned
    state = {"watched": False}

    async def main() -> None:
        changed = trio.Event()

        async def wait_changed() -> None:
            await changed.wait()

        async def drive() -> None:
            nonlocal changed
            for delay, watched in changes:
                await trio.sleep(delay)
                state["watched"] = watched
                events.append((trio.current_time(), watched))
                changed.set()
                changed = trio.Event()

        async def linger(scope: trio.CancelScope) -> None:
            await unwatched_for(5, lambda: state["watched"], wait_changed)
            events.append((trio.current_time(), None))
            scope.cancel()

        events.append((trio.current_time(), False))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drive)
            nursery.start_soon(linger, nursery.cancel_scope)
            await trio.sleep(100)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    ended = [at for at, watched in events if watched is None]
    if not ended:
        assert state["watched"], "nothing watched, and it never ended"
        return
    before = events[: events.index((ended[0], None))]
    assert before[-1][1] is False, "it returned while watched"
    # when the last stretch of watching that lasted any time at all ended (a viewer that
    # came and went within one tick watched nothing)
    watched_until = max((after for (at, watched), (after, _) in itertools.pairwise(before)
                         if watched and after > at), default=0.0)
    assert ended[0] - watched_until >= 5, (before, ended)


async def test_a_viewer_joining_a_connecting_or_retrying_upstream_hears_its_phase_at_once(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """Joining while the upstream connects: `connecting` at once; while it waits to retry
    (backoff, up to 30 s): `connecting` and the error it is retrying, at once."""
    stalled = await start(nursery, FakeSource(["stall"]), ffmpeg_timeout=10)
    refused = await start(nursery, FakeSource(["refused"]))
    for registry, heard in ((stalled, ["connecting"]), (refused, ["connecting", "UNREACHABLE"])):
        with registry.open_viewer("a") as first, registry.open_viewer("b") as joiner:
            registry.attach(first, "k", URL)
            await trio.sleep(2.5)  # connecting (silent), or waiting 2-4 s before the third try
            queued_items(first)
            registry.attach(joiner, "k", URL)
            assert phases(queued_items(joiner)) == heard
            assert queued_items(first) == []  # the others hear nothing new


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["stall", "refused", "play:2", "freeze:1", "auth"]), min_size=1, max_size=4),
       st.lists(st.floats(min_value=0, max_value=40, allow_nan=False), min_size=1, max_size=6))
@example(script=["auth", "stall"], joins=[5.0, 5e-324])  # a join while the failed upstream is still reaped
def test_every_joiner_first_hears_the_phase_the_upstream_is_in(script: list[str], joins: list[float]) -> None:
    """Under any script of the camera and any join times, a joiner's first words are the
    upstream's phase at that moment: `connecting` while it connects or before a new one
    starts, `connecting` and the error it retries while it backs off, `playing` (with the
    cached keyframe) while it plays."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            registry = await start(nursery, FakeSource(script), ffmpeg_timeout=5)
            with registry.open_viewer("first") as first:
                registry.attach(first, "k", URL)
                for at in sorted(joins):
                    await trio.sleep_until(at)
                    running = registry.source("k") is not None  # one it joins (not one ended, still reaped)
                    status = registry.status("k")
                    with registry.open_viewer("joiner") as joiner:
                        registry.attach(joiner, "k", URL)
                        heard = phases(queued_items(joiner))
                        if not running:  # it starts a new upstream, whose first attempt announces itself
                            await trio.testing.wait_all_tasks_blocked()  # (no time passes)
                            assert phases(queued_items(joiner))[:1] == ["connecting"], status
                        elif status.phase == "error":
                            assert status.error is not None
                            assert heard == ["connecting", status.error.code], (status, heard)
                        else:
                            assert heard == [status.phase], (status, heard)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_a_retired_upstream_counts_until_its_process_is_reaped(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    """An upstream is alive while its supervisor task runs: one that lingered out but whose
    process is still dying counts in `statistics()` (so `/metrics` and health) and against
    MAX_CONCURRENT_STREAMS, so the processes never outnumber the limit."""
    fake = FakeSource(["play"], reap=3)
    registry = await start(nursery, fake, linger=0, max_streams=1)
    await watch(registry, "a", 1)  # gone: linger 0 retires it, its process takes 3 s to die
    await trio.sleep(0.5)
    assert fake.running == 1
    assert registry.statistics().running == 1
    with registry.open_viewer("b") as viewer:
        with pytest.raises(Failure) as refused:
            registry.attach(viewer, "other", URL)
        assert refused.value.code is ErrorCode.LIMIT
        await wait_for(lambda: not fake.running, within=10, step=0.1)
        assert registry.statistics().running == 0
        registry.attach(viewer, "other", URL)  # the slot is free once the process is reaped
        assert registry.statistics().running == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["attach", "detach", "remove", "restart"]), st.sampled_from("abc"),
                          st.sampled_from([0.0, 0.5, 2.0])), max_size=20),
       st.sampled_from([0.0, 1.0, 4.0]), st.sampled_from([0.0, 1.0]))
def test_processes_never_outnumber_what_the_registry_counts(ops: list[tuple[str, str, float]], reap: float,
                                                           linger: float) -> None:
    """Under any order of joins, leaves, DELETEs and restarts, any linger and any time a
    process takes to die, the media processes running are never more than
    `statistics().running`, which never passes MAX_CONCURRENT_STREAMS; and once all is
    quiet, both are zero."""
    fake = FakeSource(["play"], reap=reap)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            registry = await start(nursery, fake, linger=linger, max_streams=2)
            viewers = {key: registry.open_viewer(key) for key in "abc"}
            opened = {key: lease.__enter__() for key, lease in viewers.items()}

            def check() -> None:
                running = registry.statistics().running
                assert fake.running <= running <= 2, (fake.running, running)

            for op, key, delay in ops:
                viewer = opened[key]
                if op == "attach":
                    try:
                        registry.attach(viewer, key, URL)
                    except Failure as failure:
                        assert failure.code is ErrorCode.LIMIT
                elif op == "detach":
                    registry.detach(viewer)
                elif op == "remove":
                    registry.remove(key, Failure(ErrorCode.NOT_FOUND, "stream deleted"))
                else:
                    registry.restart(key)
                check()
                await trio.sleep(delay)
                check()
            for lease in viewers.values():
                lease.__exit__(None, None, None)
            await trio.sleep(linger + reap + 1)
            assert registry.statistics().running == fake.running == 0
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
