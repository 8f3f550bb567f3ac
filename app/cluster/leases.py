"""The cluster's tables as transactions (plain functions of a `Tx`, run by `Database.run`).

A node is alive while its heartbeat (`nodes.seen_at`) is younger than LEASE_SECONDS. A
stream's lease (`leases`) names the node that holds its camera session until `expires_at`;
its `epoch` grows by one each time the lease goes to a node, so a holder that renews with
an older epoch learns it lost the camera (a node frozen past its lease). Times are the
database's clock, one clock for every node.
"""

from __future__ import annotations

import hashlib

import attrs

from ..db import Tx


@attrs.frozen
class Placement:
    """Who holds a stream's camera session now."""

    node: str
    url: str
    epoch: int


def weight(stream_id: int, node: str) -> int:
    """Rendezvous hashing: each stream goes to the live node of highest weight, so a node
    joining or leaving moves only the streams it gains or loses."""
    return int.from_bytes(hashlib.blake2b(f"{stream_id}/{node}".encode(), digest_size=8).digest(), "big")


def beat(tx: Tx, node: str, url: str, viewers: int | None = None) -> None:
    """This node is alive (its heartbeat), with its viewers (None: as last said)."""
    tx.execute("INSERT INTO nodes (id, url, seen_at, viewers) VALUES (?, ?, {now}, ?) "  # noqa: S608 (constants)
               "ON CONFLICT (id) DO UPDATE SET url = excluded.url, seen_at = excluded.seen_at"
               + ("" if viewers is None else ", viewers = excluded.viewers"), (node, url, viewers or 0))


def leave(tx: Tx, node: str) -> None:
    """This node goes away: it is no longer alive and holds no lease (its leases keep
    their epochs: a later holder's is higher)."""
    tx.execute("UPDATE nodes SET seen_at = 0, viewers = 0 WHERE id = ?", (node,))
    tx.execute("UPDATE leases SET expires_at = 0, node_id = '' WHERE node_id = ?", (node,))


def place(tx: Tx, stream_id: int, me: str, url: str, ttl: float, *, steal: bool = True) -> Placement:
    """Who holds the stream's camera: its lease holder while the lease runs (this node's
    own lease is extended, run out or not: nobody took it); else the live node of highest
    `weight`, which gets the lease with the next epoch (this node counts as live). One
    write transaction: two nodes that place the same stream at once get the same answer.

    `steal`: a lease that ran out may go to another node. Not within a lease of the
    database coming back: every lease ran out while nobody could renew, and their holders,
    playing on, renew them first (else a camera would get a second session)."""
    beat(tx, me, url)  # the placer is alive: a lease it gets has a node
    tx.execute("INSERT INTO leases (stream_id, node_id, epoch, expires_at) VALUES (?, '', 0, 0) "
               "ON CONFLICT (stream_id) DO NOTHING", (stream_id,))
    row = tx.one("SELECT node_id, epoch, expires_at > {now} FROM leases WHERE stream_id = ?"  # noqa: S608
                 + tx.dialect.for_update, (stream_id,))
    assert row is not None, "inserted above"
    holder, epoch, valid = str(row[0]), int(row[1]), bool(row[2])
    if holder == me:
        tx.execute("UPDATE leases SET expires_at = {now} + ? WHERE stream_id = ?", (ttl, stream_id))
        return Placement(me, url, epoch)
    if holder and (valid or not steal):  # never taken from a holder while its lease runs, whatever else is known
        found = tx.one("SELECT url FROM nodes WHERE id = ?", (holder,))
        return Placement(holder, str(found[0]) if found else "", epoch)
    live = dict(tx.all("SELECT id, url FROM nodes WHERE seen_at > {now} - ?", (ttl,)))
    live[me] = url
    chosen = max(live, key=lambda node: weight(stream_id, node))
    tx.execute("UPDATE leases SET node_id = ?, epoch = ?, expires_at = {now} + ? WHERE stream_id = ?",
               (chosen, epoch + 1, ttl, stream_id))
    return Placement(chosen, str(live[chosen]), epoch + 1)


def renew(tx: Tx, node: str, held: dict[int, int], ttl: float) -> set[int]:
    """Renew the leases this node holds (stream → epoch); the streams whose lease went to
    another node (or another epoch) meanwhile."""
    lost = set()
    for stream_id, epoch in held.items():
        done = tx.execute("UPDATE leases SET expires_at = {now} + ? WHERE stream_id = ? AND node_id = ? AND epoch = ?",
                          (ttl, stream_id, node, epoch))
        if done.rowcount == 0:
            lost.add(stream_id)
    return lost


def nodes(tx: Tx, ttl: float) -> list[tuple[str, str, bool, int, list[int]]]:
    """Every node seen: (id, url, alive, viewers, the streams whose camera it holds)."""
    held: dict[str, list[int]] = {}
    for node, stream_id in tx.all("SELECT node_id, stream_id FROM leases WHERE expires_at > {now} ORDER BY stream_id"):
        held.setdefault(str(node), []).append(int(stream_id))
    rows = tx.all("SELECT id, url, seen_at > {now} - ?, viewers FROM nodes ORDER BY id", (ttl,))
    return [(str(node), str(url), bool(alive), int(viewers), held.get(str(node), []))
            for node, url, alive, viewers in rows]
