"""`/` and `/static/…`: the viewer page, with the stream list in it, and its static files.

The files under `app/static/` are read once, when the app is made, and served from memory
with a strong ETag and `Cache-Control: no-cache` (a browser revalidates with If-None-Match
and gets a 304): the page's first frame waits on them, and Quart's own file sending reads
each file in 8 KiB chunks through a worker thread. Only the files found there are served,
so no path can leave the folder. `/` carries the stream list as `GET /api/streams/` would
return it, and its scripts and style sheet inline: the page opens its tiles and creates
their players without waiting for another request (the joining first frame came about
50 ms sooner in `python -m bench.browser`; the files stay under /static/ for other pages).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import attrs
from quart import Blueprint, Response, request
from quart.typing import ResponseReturnValue

from supervisors import ErrorCode

from ..errors import ApiError
from ..policy.admission import Need, door
from ..services import services
from ..store import StorageError
from .doors import is_admin
from .streams import stream_view

blueprint = Blueprint("page", __name__)
STATIC = Path(__file__).parent.parent / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
PLAIN = "text/plain; charset=utf-8"  # README, LICENSE
LIST_SLOT = b">null</script>"  # in index.html: <script id="stream-list" type="application/json">null</script>


@attrs.frozen
class Asset:
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        return cls(body, content_type, hashlib.sha256(body).hexdigest()[:32])


def _load() -> dict[str, Asset]:
    return {path.relative_to(STATIC).as_posix(): Asset.of(path.read_bytes(), TYPES.get(path.suffix, PLAIN))
            for path in sorted(STATIC.rglob("*")) if path.is_file()}


def _inline(page: bytes, assets: dict[str, Asset]) -> bytes:
    """The page with its own scripts and style sheet in it: one response, no request to
    wait for before the player exists (a script that could end its element stays out)."""
    for name, asset in assets.items():
        if name.endswith(".js") and b"</script" not in asset.body.lower():
            page = page.replace(f'<script src="/static/{name}"></script>'.encode(),
                                b"<script>" + asset.body + b"</script>")
        elif name.endswith(".css") and b"</style" not in asset.body.lower():
            page = page.replace(f'<link rel="stylesheet" href="/static/{name}">'.encode(),
                                b"<style>" + asset.body + b"</style>")
    return page


ASSETS = _load()
PAGE_HEAD, PAGE_TAIL = _inline(ASSETS["index.html"].body, ASSETS).split(LIST_SLOT)


def _send(asset: Asset) -> Response:
    headers = {"ETag": f'"{asset.etag}"', "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if request.if_none_match.contains_weak(asset.etag):
        return Response(b"", 304, headers)
    return Response(asset.body, 200, {**headers, "Content-Type": asset.content_type})


def _script_json(value: object) -> bytes:
    """JSON that cannot end the <script> element it sits in."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


@blueprint.route("/", methods=["GET"])
@door(Need.PUBLIC)  # the page asks for the token itself
async def index() -> ResponseReturnValue:
    s = services()
    streams: object = None  # the page asks REST itself (with the token it asks for)
    if await is_admin():
        try:
            streams = [stream_view(record) for record in await s.store.all()]
        except StorageError:  # the page shows REST's 503
            pass
    body = PAGE_HEAD + b">" + _script_json(streams) + b"</script>" + PAGE_TAIL
    return _send(Asset.of(body, TYPES[".html"]))


@blueprint.route("/static/<path:name>", methods=["GET"])
@door(Need.PUBLIC, rate=False)  # what pages load
async def static(name: str) -> ResponseReturnValue:
    asset = ASSETS.get(name)
    if asset is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, f"no file {name}")
    return _send(asset)
