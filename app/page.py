"""`/`: the viewer page (`app/static/index.html`, with `viewer.js` and the vendored player)."""

from __future__ import annotations

from quart import Blueprint, current_app
from quart.typing import ResponseReturnValue

blueprint = Blueprint("page", __name__)


@blueprint.route("/", methods=["GET"])
async def index() -> ResponseReturnValue:
    return await current_app.send_static_file("index.html")
