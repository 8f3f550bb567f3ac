"""The lease rules (app/cluster/leases.py) as SQL on a real database, with the database's
clock replaced by the test's: random orders of placing, renewing, nodes dying and time
passing never give a camera to a second node while the first one's lease runs; and the
stream a node reads from the owner, under random cancellations."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator

import attrs
import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from app.cli import workers
from app.cluster import leases, peer
from app.db import Tx
from app.db.base import SQLITE
from app.db.schema import SQLITE as MIGRATIONS
from app.policy.tokens import Access

TTL = 10.0
NODES = ("a", "b", "c")
step = st.one_of(
    st.tuples(st.just("place"), st.sampled_from(NODES)),
    st.tuples(st.just("renew"), st.sampled_from(NODES)),
    st.tuples(st.just("beat"), st.sampled_from(NODES)),
    st.tuples(st.just("wait"), st.floats(0, 2.5 * TTL)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40))
def test_no_second_owner_while_a_lease_runs(steps: list[tuple[str, object]]) -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    for statement in MIGRATIONS:
        db.execute(statement)
    now = 1000.0
    held: dict[str, tuple[int, float]] = {}  # node -> (epoch, until when it may play: its lease's end)

    def tx() -> Tx:
        return Tx(db, attrs.evolve(SQLITE, now=repr(now)))

    for action, arg in steps:
        if action == "wait":
            now += float(arg)  # type: ignore[arg-type]
        elif action == "beat":
            leases.beat(tx(), str(arg), f"http://{arg}", 0)
        elif action == "renew" and arg in held:
            epoch, _ = held[str(arg)]
            if leases.renew(tx(), str(arg), {1: epoch}, TTL):
                del held[str(arg)]  # fenced: it stops playing now
            else:
                held[str(arg)] = (epoch, now + TTL)
        elif action == "place":
            placed = leases.place(tx(), 1, str(arg), f"http://{arg}", TTL)
            if placed.node in held and held[placed.node][0] == placed.epoch:
                held[placed.node] = (placed.epoch, max(held[placed.node][1], now + TTL) if placed.node == arg
                                     else held[placed.node][1])
                continue
            others = {node: until for node, (_, until) in held.items() if node != placed.node and until > now}
            assert not others, f"stream given to {placed.node} (epoch {placed.epoch}) while {others} may play"
            held = {node: h for node, h in held.items() if node != placed.node}
            held[placed.node] = (placed.epoch, now + TTL)
            epochs = [epoch for epoch, _ in held.values()]
            assert len(set(epochs)) == len(epochs)  # each grant its own epoch: a stale one is told apart


def test_a_node_token_watches_any_stream_and_nothing_else() -> None:
    now = [1000.0]
    access = Access("admin-token-0123456789", b"k" * 32, clock=lambda: now[0])
    token = access.node_token("node-1.example")
    grant = access.peer(token)
    assert grant is not None and grant.may_watch(7) and grant.may_watch(8) and not grant.admin
    assert not grant.may_watch(None)  # never a ?url= source
    assert access.check(token) is None  # not an API token: it opens no admin route
    assert Access("admin-token-0123456789", b"x" * 32).peer(token) is None  # another cluster's key
    assert access.peer(token[:-2] + "AA") is None and access.peer("n1.a.b.c") is None and access.peer(None) is None
    now[0] += 61
    assert access.peer(token) is None  # expired


class Trickle(httpx.AsyncByteStream):
    """A response body that arrives a chunk every 50 ms."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            await trio.sleep(0.05)
            yield chunk


@settings(max_examples=15, deadline=None)
@given(st.lists(st.floats(0.0, 0.12), min_size=1, max_size=12))
def test_a_peer_stream_loses_nothing_when_reads_are_cancelled(windows: list[float]) -> None:
    """The upstream reads its stream under deadlines (its gathering window, its watchdog):
    a read cut short by one loses no byte and does not end the stream (a peer node's
    viewers once got a fraction of the stream under load)."""
    chunks = [bytes([n]) * 100 for n in range(8)]

    async def read() -> bytes:
        client = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(
            200, stream=Trickle(chunks))))
        got = b""
        async with client:
            response = await peer.connect(client, "b", "http://b", 1, "token")
            async with peer.reading(response, "b") as run:
                cuts = iter(windows)
                while True:
                    with trio.move_on_after(next(cuts, 1.0)):
                        part = await run.stdout.receive_some(64)
                        if not part:
                            break
                        got += part
        return got

    assert trio.run(read) == b"".join(chunks)


def test_placement_spreads_streams_over_live_nodes_and_moves_only_a_dead_nodes_share() -> None:
    """Rendezvous hashing: 300 streams over three live nodes land on each (none gets
    under a fifth); when one is gone only its streams move, the others stay."""
    def owner(stream_id: int, nodes: tuple[str, ...]) -> str:
        return max(nodes, key=lambda node: leases.weight(stream_id, node))

    three = {stream_id: owner(stream_id, NODES) for stream_id in range(1, 301)}
    assert all(list(three.values()).count(node) > 60 for node in NODES)
    two = {stream_id: owner(stream_id, ("a", "b")) for stream_id in three}
    assert all(two[s] == three[s] for s in three if three[s] != "c")


def test_workers_auto_is_one_per_core_and_a_bad_count_is_refused() -> None:
    assert workers.worker_count("auto") == (os.cpu_count() or 1)
    assert workers.worker_count("3") == 3
    for bad in ("0", "-1", "257", "many"):
        with pytest.raises(ValueError):
            workers.worker_count(bad)
