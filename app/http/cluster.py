"""`GET /api/cluster/` (admin): every node of the cluster, whether it is alive, the streams
whose camera session it holds and its viewers (`app/cluster/`)."""

from __future__ import annotations

import attrs
from quart import Blueprint, jsonify
from quart.typing import ResponseReturnValue

from ..policy.admission import Need, door
from ..services import services

blueprint = Blueprint("cluster", __name__)


@blueprint.route("/api/cluster/", strict_slashes=False, methods=["GET"])
@door(Need.ADMIN)
async def cluster() -> ResponseReturnValue:
    nodes = await services().cluster.view()  # StorageError: 503
    return jsonify({"nodes": [attrs.asdict(node) for node in nodes]})
