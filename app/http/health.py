"""`GET /api/health/`: version, FFmpeg in use, running upstreams, viewers, the WebSocket send
path; 503 if degraded. With API_TOKEN set and not presented, only the status. Open to
anyone without API_TOKEN, so it names no file-system path then: FFmpeg by its file name
(its whole path only to a caller with API_TOKEN)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import PurePath

from quart import Blueprint, jsonify
from quart.typing import ResponseReturnValue

from supervisors import Health

from ..policy.admission import Need, door
from ..services import services
from ..store import StorageError
from .doors import is_admin

blueprint = Blueprint("health", __name__)


def _installed_version() -> str:
    try:
        return version("rtsp-stream-viewer")
    except PackageNotFoundError:
        return "0+unknown"


APP_VERSION = _installed_version()  # read once: it does not change while the process runs


@blueprint.route("/api/health/", strict_slashes=False, methods=["GET"])
@door(Need.PUBLIC, rate=False)  # monitors poll it
async def health() -> ResponseReturnValue:
    s = services()
    ffmpeg = await s.ffmpeg.info()
    problems = [ffmpeg.problem] if ffmpeg.problem else []
    try:
        await s.store.ping()
    except StorageError as error:
        problems.append(f"storage unavailable: {error}")
    stats = s.registry.statistics()
    body: dict[str, object] = {"status": Health.DEGRADED if problems else Health.OK}
    if await is_admin():  # paths, versions and reasons are for the operator, not for anyone
        body.update({
            "version": APP_VERSION,
            "ffmpeg": {"path": ffmpeg.path if s.access.required else PurePath(ffmpeg.path).name,
                       "version": ffmpeg.version},
            "streams": {"running": stats.running, "max": stats.max, "transcoding": stats.transcoding,
                        "cpu_percent": stats.cpu_percent},
            "viewers": stats.viewers,
            "send_path": s.send_path.path,  # null until the first WebSocket
        })
        if s.send_path.reason is not None:
            body["send_path_reason"] = s.send_path.reason
        if problems:
            body["reason"] = "; ".join(problems)
    return jsonify(body), 503 if problems else 200
