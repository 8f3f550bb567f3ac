"""The lease rules (app/cluster/leases.py) as SQL on a real database, with the database's
clock replaced by the test's: random orders of placing, renewing, nodes dying and time
passing never give a camera to a second node while the first one's lease runs."""

from __future__ import annotations

import sqlite3

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from app.cluster import leases
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
