"""A fake ONVIF device on loopback: its WS-Discovery answer (UDP), and a device and media
service (SOAP over HTTP) that asks for WS-UsernameToken digest credentials, whose one
profile's stream is a real test camera. Other behaviours for the hostile cases:
`garbage` (a noise datagram before its match, and noise for SOAP), `bomb` (its SOAP answer is a billion-laughs XML), and
`silent` (answers the probe, then never answers on HTTP)."""

from __future__ import annotations

import base64
import hashlib
import re
import socket
from xml.etree import ElementTree

import attrs
import trio

MODES = ("ok", "garbage", "bomb", "silent")
BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&lol4;</s:Body></s:Envelope>"""


def _soap(body: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
            'xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:trt="http://www.onvif.org/ver10/media/wsdl" '
            'xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:ter="http://www.onvif.org/ver10/error">'
            f"<s:Body>{body}</s:Body></s:Envelope>").encode()


NOT_AUTHORIZED = _soap("<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>ter:NotAuthorized</s:Value>"
                       "</s:Subcode></s:Code><s:Reason><s:Text>Sender not authorized</s:Text></s:Reason></s:Fault>")


@attrs.define
class FakeOnvif:
    stream_url: str  # what GetStreamUri answers (the test camera's URL, without credentials)
    user: str = "admin"
    password: str = "onvif-secret"
    mode: str = "ok"
    name: str = "Yard Camera"
    media_host: str = "127.0.0.1"  # where GetCapabilities says the media service is
    udp_port: int = 0
    http_port: int = 0
    asked: list[str] = attrs.Factory(list)  # the SOAP actions it was asked, in order

    @property
    def probe_address(self) -> str:
        return f"127.0.0.1:{self.udp_port}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await udp.bind(("127.0.0.1", 0))
        self.udp_port = udp.getsockname()[1]
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.http_port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._answer_probes, udp)
            nursery.start_soon(trio.serve_listeners, self._serve, listeners)
            task_status.started()

    async def _answer_probes(self, udp: trio.socket.SocketType) -> None:
        with udp:
            while True:
                data, peer = await udp.recvfrom(65535)
                if b"Probe" not in data:
                    continue
                if self.mode == "garbage":  # noise first, then its match (whose SOAP is noise too)
                    await udp.sendto(b"\x00\xffnot xml at all<<<", peer)
                xaddr = f"http://127.0.0.1:{self.http_port}/onvif/device_service"
                name = self.name.replace(" ", "%20")
                await udp.sendto(
                    ('<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
                     'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"><s:Body><d:ProbeMatches><d:ProbeMatch>'
                     f"<d:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/name/{name} "
                     "onvif://www.onvif.org/hardware/FakeCam</d:Scopes>"
                     f"<d:XAddrs>{xaddr}</d:XAddrs></d:ProbeMatch></d:ProbeMatches></s:Body></s:Envelope>").encode(),
                    peer)

    async def _serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            while len(body) < length:
                body += await stream.receive_some()
            if self.mode == "silent":
                await trio.sleep_forever()
            status, answer = self._answer(body.decode())
            await stream.send_all(f"HTTP/1.1 {status}\r\nContent-Type: application/soap+xml\r\n"
                                  f"Content-Length: {len(answer)}\r\nConnection: close\r\n\r\n".encode() + answer)

    def _authorized(self, body: str) -> bool:
        """The request's WS-UsernameToken is this device's user, with the digest of its
        password (our own client's XML: the standard library parses it)."""
        found = {e.tag.rsplit("}", 1)[-1]: (e.text or "") for e in ElementTree.fromstring(body).iter()}
        if not {"Username", "Password", "Nonce", "Created"} <= set(found):
            return False
        expected = base64.b64encode(hashlib.sha1(base64.b64decode(found["Nonce"]) + found["Created"].encode()
                                                 + self.password.encode()).digest()).decode()
        return found["Username"] == self.user and found["Password"] == expected

    def _answer(self, body: str) -> tuple[str, bytes]:
        action = next((a for a in ("GetCapabilities", "GetProfiles", "GetStreamUri") if a in body), "unknown")
        self.asked.append(action)
        if self.mode == "garbage":
            return "200 OK", b"\x00garbage, not SOAP"
        if self.mode == "bomb":
            return "200 OK", BOMB
        if action == "GetCapabilities":
            media = f"http://{self.media_host}:{self.http_port}/onvif/media_service"
            return "200 OK", _soap(f"<tds:GetCapabilitiesResponse><tds:Capabilities><tt:Media><tt:XAddr>{media}"
                                   "</tt:XAddr></tt:Media></tds:Capabilities></tds:GetCapabilitiesResponse>")
        if not self._authorized(body):
            return "400 Bad Request", NOT_AUTHORIZED
        if action == "GetProfiles":
            return "200 OK", _soap(
                '<trt:GetProfilesResponse><trt:Profiles token="main" fixed="true"><tt:Name>MainStream</tt:Name>'
                "<tt:VideoEncoderConfiguration><tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>640</tt:Width>"
                "<tt:Height>360</tt:Height></tt:Resolution></tt:VideoEncoderConfiguration></trt:Profiles>"
                "</trt:GetProfilesResponse>")
        if action == "GetStreamUri":
            return "200 OK", _soap(f"<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>{self.stream_url}</tt:Uri>"
                                   "</trt:MediaUri></trt:GetStreamUriResponse>")
        return "400 Bad Request", _soap("<s:Fault/>")
