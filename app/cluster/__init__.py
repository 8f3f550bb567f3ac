"""One camera session per stream across every node that shares the database.

`leases` is the SQL (nodes' heartbeats, who holds each camera, with an epoch that fences
a node that lost it), `peer` reads a stream from the node that holds its camera, and
`node.Cluster` puts them together for the engine: a Runner that, at each attempt of an
upstream, plays the camera where this node holds (or is given) the lease and the owner's
`stream.ts` elsewhere, and the loops that keep the node's heartbeat, renew its leases and
bring every change of a stream to the upstreams of this node.
"""

from .node import Cluster, NodeView

__all__ = ["Cluster", "NodeView"]
