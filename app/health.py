"""`GET /api/health/`: version, FFmpeg in use, running upstreams, viewers; 503 if degraded."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from quart import Blueprint, jsonify
from quart.typing import ResponseReturnValue

from .services import services
from .store import StorageError

blueprint = Blueprint("health", __name__)


def app_version() -> str:
    try:
        return version("rtsp-stream-viewer")
    except PackageNotFoundError:
        return "0+unknown"


@blueprint.route("/api/health/", strict_slashes=False, methods=["GET"])
async def health() -> ResponseReturnValue:
    s = services()
    ffmpeg = await s.ffmpeg()
    problems = [ffmpeg.problem] if ffmpeg.problem else []
    try:
        await s.store.ping()
    except StorageError as error:
        problems.append(f"storage unavailable: {error}")
    stats = s.registry.statistics()
    body = {
        "status": "degraded" if problems else "ok",
        "version": app_version(),
        "ffmpeg": {"path": ffmpeg.path, "version": ffmpeg.version},
        "streams": {"running": stats.running, "max": stats.max},
        "viewers": stats.viewers,
    }
    if problems:
        body["reason"] = "; ".join(problems)
    return jsonify(body), 503 if problems else 200
