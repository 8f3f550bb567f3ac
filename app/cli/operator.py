"""The operator's commands against a running server or a camera (`rtsp-viewer check`,
`streams`, `probe`); `app/cli/main.py` parses their arguments.

They speak to the server as any client does (REST, and the WebSocket of SPEC §4), with
API_TOKEN from the environment when it is set, else a user's RTSP_VIEWER_USER and
RTSP_VIEWER_PASSWORD (`Authorization: Basic`). Each prints what it found and returns the
process's exit status: 0 when everything worked, 1 naming the step that failed, 2 for
bad arguments.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio_websocket

from supervisors import Action, Failure, MessageType, Source, Transport, mask_url
from supervisors.media.mpegts import Aligner, Index
from supervisors.probe import probe

CHECK_NAME = "rtsp-viewer check"
PLAY_WITHIN = 20.0  # seconds for the temporary stream's first keyframe


class StepFailed(Exception):
    """A step of a command failed; str() says why."""


class Api:
    """The server's REST API (urllib, in a worker thread)."""

    def __init__(self, server: str, token: str | None, user: tuple[str, str] | None = None) -> None:
        """`token`: API_TOKEN; else `user` (name, password): `Authorization: Basic`."""
        self.server = server.rstrip("/")
        self.token = token
        self.user = user

    @property
    def authorization(self) -> str | None:
        if self.token:
            return f"Bearer {self.token}"
        if self.user:
            return "Basic " + base64.b64encode(":".join(self.user).encode()).decode()
        return None

    async def call(self, method: str, path: str, body: object = None, expect: int = 200) -> Any:
        """The decoded JSON body (None when empty); raises StepFailed for any other status."""
        return await trio.to_thread.run_sync(self._call, method, path, body, expect)

    def _call(self, method: str, path: str, body: object, expect: int) -> Any:
        headers = {"Accept": "application/json"}
        if self.authorization:
            headers["Authorization"] = self.authorization
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        request = urllib.request.Request(self.server + path, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode(errors="replace")
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", None) or error.__class__.__name__
            raise StepFailed(f"cannot reach {self.server}: {reason}") from None
        if status != expect:
            raise StepFailed(f"HTTP {status}: {_error_text(text)}")
        try:
            return json.loads(text) if text else None
        except ValueError:
            raise StepFailed(f"HTTP {status} but not JSON: is {self.server} this server?") from None

    def socket_url(self, stream_id: int) -> str:
        return self.server.replace("http", "ws", 1) + f"/ws/stream?id={stream_id}"


def _error_text(text: str) -> str:
    try:
        error = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        return text[:200]
    fields = "".join(f"; {name}: {message}" for name, message in (error.get("fields") or {}).items())
    return f"{error.get('code')}: {error.get('message')}{fields}"


async def play_until_keyframe(api: Api, stream_id: int, within: float) -> tuple[int, float]:
    """Play the stream over the WebSocket until media with a keyframe arrives: (bytes
    received, seconds it took). Raises StepFailed with the server's error."""
    protocols = ["rtsp-viewer", f"bearer.{api.token}"] if api.token else None
    context = ssl.create_default_context() if api.server.startswith("https") else None
    started = time.monotonic()
    aligner, index, received = Aligner(), Index(), 0
    try:
        with trio.fail_after(within):
            basic = [(b"Authorization", (api.authorization or "").encode())] if api.user and not api.token else None
            async with trio_websocket.open_websocket_url(api.socket_url(stream_id), subprotocols=protocols,
                                                         ssl_context=context, extra_headers=basic) as ws:
                await ws.send_message(json.dumps({"action": Action.START}))
                while True:
                    message = await ws.get_message()
                    if isinstance(message, str):
                        try:
                            event = json.loads(message)
                        except ValueError:
                            raise StepFailed(f"the socket sent text that is not JSON: {message[:80]!r}") from None
                        if isinstance(event, dict) and event.get("type") == MessageType.ERROR:
                            raise StepFailed(f"{event.get('code')}: {event.get('message')}")
                        continue
                    received += len(message)
                    data = aligner.feed(message)
                    if data and index.scan(data) is not None:
                        return received, time.monotonic() - started
    except trio.TooSlowError:
        raise StepFailed(f"no keyframe within {within:g} s ({received} bytes)") from None
    except trio_websocket.ConnectionClosed as closed:
        raise StepFailed(f"socket closed: {closed.reason}") from None
    except (trio_websocket.HandshakeError, OSError) as error:
        raise StepFailed(f"socket: {error}") from None


Step = Callable[[], Awaitable[str]]


async def _steps(steps: list[tuple[str, Step]]) -> int:
    for name, step in steps:
        started = time.monotonic()
        try:
            detail = await step()
        except StepFailed as failed:
            print(f"FAIL {name}: {failed}", flush=True)
            return 1
        print(f"ok   {name}: {detail} ({(time.monotonic() - started) * 1000:.0f} ms)", flush=True)
    return 0


async def check(api: Api, camera: str | None, transport: str) -> int:
    """health, list, and with a camera URL: create a temporary stream, play it until a
    keyframe arrives, delete it (deleted even when playing failed)."""
    created: list[int] = []

    async def health() -> str:
        body = await api.call("GET", "/api/health/")
        if not isinstance(body, dict) or "status" not in body:
            raise StepFailed(f"not this server's health: {str(body)[:80]}")
        return f"{body['status']}, {body.get('streams', {}).get('running', 0)} upstreams running"

    async def listed() -> str:
        return f"{len(await api.call('GET', '/api/streams/'))} streams"

    async def create() -> str:
        body = await api.call("POST", "/api/streams/", {"name": CHECK_NAME, "url": camera, "transport": transport},
                              expect=201)
        created.append(body["id"])
        return f"stream {body['id']} ({body['url']})"

    async def play() -> str:
        size, took = await play_until_keyframe(api, created[0], PLAY_WITHIN)
        return f"a keyframe after {took:.2f} s, {size} bytes"

    async def delete() -> str:
        await api.call("DELETE", f"/api/streams/{created.pop()}/", expect=204)
        return "deleted"

    steps: list[tuple[str, Step]] = [("health", health), ("list", listed)]
    if camera is None:
        return await _steps(steps)
    status = await _steps([*steps, ("create", create), ("play", play)])
    if created:  # cleaned up whatever happened
        status = max(status, await _steps([("delete", delete)]))
    return status


async def streams(api: Api, action: str, args: list[str], transport: str) -> int:
    """list | add NAME URL | show ID | rm ID: the API's JSON on stdout."""
    try:
        if action == "list":
            result = await api.call("GET", "/api/streams/")
        elif action == "add" and len(args) == 2:
            result = await api.call("POST", "/api/streams/", {"name": args[0], "url": args[1], "transport": transport},
                                    expect=201)
        elif action in ("show", "rm") and len(args) == 1 and args[0].isdigit():
            if action == "show":
                result = await api.call("GET", f"/api/streams/{args[0]}/")
            else:
                result = await api.call("DELETE", f"/api/streams/{args[0]}/", expect=204)
        else:
            print("usage: rtsp-viewer streams list | add NAME URL | show ID | rm ID", file=sys.stderr)
            return 2
    except StepFailed as failed:
        print(f"rtsp-viewer streams {action}: {failed}", file=sys.stderr)
        return 1
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0


async def probe_camera(ffmpeg: str, url: str, transport: str, camera_timeout: float) -> int:
    """Codecs, size, frame rate and audio of a camera, or its classified error."""
    try:
        found = await probe(ffmpeg, Source(url, Transport(transport)), camera_timeout=camera_timeout)
    except Failure as failure:
        print(f"{mask_url(url)}: {failure.code}: {failure.message}", file=sys.stderr)
        return 1
    print(json.dumps({"url": mask_url(url), "video": found.video, "audio": found.audio}, indent=2))
    return 0
