"""The OpenAPI document at /api/openapi.json, checked against the running server by
schemathesis (every REST operation, with and without API_TOKEN): no 5xx, every status,
header, content type and body as documented, invalid input rejected.

GET .../stream.ts is a live stream that never ends, and a stream made of schemathesis's
random URLs would send FFmpeg (and DNS) off the machine: it and GET .../snapshot.jpg run
alone, against a server with no streams, so every call is answered (404, 401, 429 …)
without an upstream; their 200s are tests/test_stock.py's and tests/test_snapshot.py's. schemathesis's positive_data_acceptance check is left out,
since names and URLs have rules (trimming, control and invisible characters, port range)
that the document states in words, not as JSON Schema patterns. GET /api/discover/
waits its `timeout` (up to 10 s) for devices at every call: it is left out too, and
tests/test_discover.py checks its answers (DISCOVERY_ADDRESS points at a loopback port
nobody answers on all the same: never the LAN).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from tests.helpers import BIN, env, spawn

TOKEN = "openapi-token-0123456789abcdef"
COMMON = ["--checks", "all", "--exclude-checks", "positive_data_acceptance", "--max-examples", "40", "--seed", "7"]
REST = ["--exclude-operation-id", "streamTs", "--exclude-operation-id", "streamMp4", "--exclude-operation-id", "snapshot",
        "--exclude-operation-id", "discover"]
# no stateful phase: no POST, so no stream (and no camera connection) behind them
STREAM = ["--include-operation-id", "streamTs", "--include-operation-id", "streamMp4", "--include-operation-id", "snapshot",
          "--phases", "examples,coverage,fuzzing"]


@pytest.mark.parametrize(("token", "operations"), [("none set", REST), ("given", REST), ("missing", REST),
                                                   ("none set", STREAM), ("given", STREAM)])
async def test_the_server_conforms_to_its_openapi_document(nursery: trio.Nursery, tmp_path: Path, token: str,
                                                           operations: list[str]) -> None:
    extra = {"RATE_LIMIT": "off", "PASSWORD_HASH": "owasp-minimum", "DISCOVERY_ADDRESS": "127.0.0.1:9"} | ({} if token == "none set" else {"API_TOKEN": TOKEN})
    server = await spawn(nursery, [str(BIN / "rtsp-viewer"), "serve", "--port", "0"], env(tmp_path, **extra))
    try:
        base = await server.url()
        async with httpx.AsyncClient(base_url=base) as http:
            document = (await http.get("/api/openapi.json")).json()
        assert document["openapi"] == "3.1.0" and "/api/streams/{stream_id}/play-token" in document["paths"]
        headers = ["-H", f"Authorization: Bearer {TOKEN}"] if token == "given" else []
        done = await trio.run_process([str(BIN / "st"), "run", f"{base}/api/openapi.json", *COMMON, *operations,
                                       *headers],
                                      capture_stdout=True, capture_stderr=True, check=False)
        report = done.stdout.decode(errors="replace")
        assert done.returncode == 0, report[-4000:]
        assert " passed" in report and "failures" not in report.split("SUMMARY")[-1].lower(), report[-2000:]
    finally:
        server.process.terminate()
        with trio.CancelScope(shield=True):
            await server.process.wait()
    assert "Traceback" not in server.stderr
