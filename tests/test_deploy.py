"""The deployment as an operator copies it: deploy/nginx.conf (a real nginx with TLS; the
viewer page plays through it in Chromium) in front of `rtsp-viewer serve` with JSON logs,
and CERTFILE/KEYFILE without a proxy.

The nginx site file is used as it is, with only its ports, paths and certificate swapped
for the test's own (a CA and certificate made by trustme).
"""

from __future__ import annotations

import json
import signal
import ssl
from pathlib import Path
from typing import Any

import httpx
import trio
import trustme

from app.settings import SettingsError, load
from tests.browser import drive
from tests.camera import Camera
from tests.helpers import BIN, ROOT, env, open_viewer, probe, spawn, start_server
from tests.nginx import free_port, run_nginx

PASSWORD = "Sekr1tDeploy"  # the camera's
SECRET_QUERY = "tok3n-in-the-query"


def site_for_test(folder: Path, app: str, http_port: int, https_port: int) -> str:
    """deploy/nginx.conf with the test's ports, paths and certificate; each swap must find
    its line, so the test follows the file."""
    site = (ROOT / "deploy/nginx.conf").read_text()
    swaps = [("    listen [::]:80;\n", ""), ("    listen [::]:443 ssl;\n", ""),
             ("listen 80;", f"listen 127.0.0.1:{http_port};"), ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
             ("server 127.0.0.1:8000;", f"server {app};"), ("/var/log/nginx/", f"{folder}/"),
             ("/etc/ssl/rtsp-viewer/", f"{folder}/")]
    for old, new in swaps:
        assert old in site, f"deploy/nginx.conf no longer has {old!r}"
        site = site.replace(old, new)
    return site


async def test_behind_the_deploy_nginx_conf_over_tls_with_json_logs(nursery: trio.Nursery, tmp_path: Path) -> None:
    camera = Camera(auth="digest", password=PASSWORD)
    await nursery.start(camera.run)
    server = await spawn(nursery, [str(BIN / "rtsp-viewer"), "serve", "--port", "0"],
                         env(tmp_path, TRUSTED_PROXIES="127.0.0.1/32", LOG_FORMAT="json", LINGER="0"))
    app = (await server.url()).removeprefix("http://")
    folder = tmp_path / "nginx"
    folder.mkdir()
    _, _, client_tls = certificate_files(folder)  # where the site file's paths point
    http_port, https_port = free_port(), free_port()
    base = f"https://127.0.0.1:{https_port}"
    async with run_nginx(folder, site_for_test(folder, app, http_port, https_port), https_port):
        async with httpx.AsyncClient() as plain:  # HTTP goes to HTTPS
            moved = await plain.get(f"http://127.0.0.1:{http_port}/api/streams/")
        assert moved.status_code == 301 and moved.headers["Location"] == "https://127.0.0.1/api/streams/"
        # REST over HTTPS, from the client's own address, which the server sees through nginx
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2", verify=client_tls)
        async with httpx.AsyncClient(base_url=base, transport=transport, verify=client_tls) as http:
            created = await http.post("/api/streams/", json={"name": "door", "url": camera.url()})
            assert created.status_code == 201, created.text
            assert created.headers["Strict-Transport-Security"] == "max-age=31536000"
            assert (await http.get(f"/api/health/?token={SECRET_QUERY}")).status_code == 200
            stream_id = created.json()["id"]

            def plays(page: Any) -> tuple[int, str]:  # the viewer page in Chromium, over HTTPS and WSS
                page.wait_for_function("document.querySelector('.tile video').currentTime > 1", timeout=15_000)
                return (page.evaluate("document.querySelector('.tile video').videoWidth"),
                        page.text_content(".tile .phase"))

            shown = await drive(f"{base}/", plays, tmp_path / "behind-nginx.png", self_signed=True)
            assert shown == (320, "playing")
            # a WSS session that plays and decodes, on the server's lean send path
            url = f"wss://127.0.0.1:{https_port}/ws/stream?id={stream_id}"
            origin = [("Origin", base)]  # as the viewer page's socket has: same origin, through the proxy
            async with open_viewer(url, ssl_context=client_tls, extra_headers=origin) as viewer:
                await viewer.play()
                media = await viewer.collect(2.0)
                health = (await http.get("/api/health/")).json()
                assert health["send_path"] == "wire", health
                # SIGTERM: the player sees `stopped` and 1001 through nginx
                server.process.send_signal(signal.SIGTERM)
                await viewer.status("stopped")
                assert await viewer.closed() == 1001
        with trio.fail_after(5):
            await server.process.wait()
    assert server.process.returncode == 0
    video, errors = probe(media)
    assert "h264" in video and "320x240" in video and errors == "", (video, errors)

    access_log = (folder / "rtsp-viewer.access.log").read_text()
    assert "GET /api/health/ HTTP/1.1\" 200" in access_log and SECRET_QUERY not in access_log

    lines = [json.loads(line) for line in server.stderr.strip().splitlines()]  # every line is JSON
    assert all({"time", "level", "logger", "event", "message"} <= set(line) for line in lines)
    assert PASSWORD not in server.stderr and camera.url() not in server.stderr
    created_line = next(line for line in lines if line["event"] == "http.request" and line["method"] == "POST")
    assert created_line["client"] == "127.0.0.2"
    assert created_line["request"] in access_log  # nginx's $request_id: one id in both logs
    assert created_line["path"] == "/api/streams/" and created_line["status"] == 201
    health_line = next(line for line in lines if line["event"] == "http.request" and line["path"] == "/api/health/")
    assert SECRET_QUERY not in json.dumps(health_line) and len(health_line["request"]) == 32
    opened = next(line for line in lines if line["event"] == "ws.opened")
    assert opened["stream"] == str(stream_id) and opened["connection"].startswith("c") and opened["client"]
    assert {"upstream.connecting", "upstream.playing"} <= {line["event"] for line in lines
                                                          if line.get("stream") == str(stream_id)}
    assert any(line["logger"] == "hypercorn.error" for line in lines)  # Hypercorn's lines are JSON too


def certificate_files(folder: Path) -> tuple[Path, Path, ssl.SSLContext]:
    """(certificate chain, key, a client context that trusts them), for 127.0.0.1."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    issued.private_key_pem.write_to_path(str(folder / "privkey.pem"))
    issued.cert_chain_pems[0].write_to_path(str(folder / "fullchain.pem"))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return folder / "fullchain.pem", folder / "privkey.pem", client


async def test_certfile_and_keyfile_serve_https_and_wss_without_a_proxy(nursery: trio.Nursery, tmp_path: Path) -> None:
    camera = Camera()
    await nursery.start(camera.run)
    cert, key, client_tls = certificate_files(tmp_path)
    with_key = {"CERTFILE": str(cert), "KEYFILE": str(key)}
    assert load(with_key).certfile == str(cert)
    for bad in ({"CERTFILE": str(key), "KEYFILE": str(cert)}, {"CERTFILE": str(cert), "KEYFILE": str(cert)}):
        try:
            load(bad)
        except SettingsError as error:
            assert "CERTFILE and KEYFILE cannot be loaded" in str(error)
        else:
            raise AssertionError(f"{bad} was accepted")
    server = await start_server(nursery, certfile=str(cert), keyfile=str(key))
    assert server.base.startswith("https://")
    async with httpx.AsyncClient(base_url=server.base, verify=client_tls) as http:
        stream_id = (await http.post("/api/streams/", json={"name": "tls", "url": camera.url()})).json()["id"]
        async with server.viewer(f"id={stream_id}", ssl_context=client_tls) as viewer:
            await viewer.play()
            media = await viewer.collect(1.5)
            health = (await http.get("/api/health/")).json()
    video, errors = probe(media)
    assert "h264" in video and errors == "", (video, errors)
    # the cost stated in the README: over Hypercorn's own TLS, media takes the ASGI path
    assert health["send_path"] == "asgi" and "TLS" in health["send_path_reason"], health
