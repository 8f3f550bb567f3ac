"""`rtsp-viewer discover [--timeout 3] [--user U --password P] [--add [N,…]]`: the ONVIF
cameras on the LAN (supervisors/camera/onvif.py), each profile on a numbered line with
its resolution and RTSP URL (the password masked); `--add` registers them (all, or the
numbers given) as streams on the server (`--server`, API_TOKEN or RTSP_VIEWER_USER and
RTSP_VIEWER_PASSWORD, as `rtsp-viewer streams`), with the credentials in their URLs.
`--probe-address host:port` sends the probe there instead of the LAN's multicast group
(a device on another subnet; the tests' fake device). Every address a device names is
checked against ALLOWED_SOURCES. Exit status: 0, 1 (nothing found, or an add failed),
2 (bad arguments).
"""

from __future__ import annotations

import argparse
import os
import sys

from supervisors import Failure, mask_url
from supervisors.camera.onvif import Credentials, Profile, discover, parse_address, with_credentials
from supervisors.camera.sources import SourcePolicy

from ..settings import load_or_exit
from . import operator


def add_parser(commands: argparse._SubParsersAction, server_default: str, server_help: str) -> None:  # type: ignore[type-arg]
    look = commands.add_parser("discover", help="find ONVIF cameras on the LAN and their RTSP URLs")
    look.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for answers (0.1-10, default 3)")
    look.add_argument("--user", help="the cameras' ONVIF user")
    look.add_argument("--password", default="", help="the cameras' ONVIF password")
    look.add_argument("--add", nargs="?", const="all", metavar="N,…",
                      help="register the cameras found (all, or these numbers) as streams")
    look.add_argument("--probe-address", help="host:port to probe instead of the LAN's multicast group")
    look.add_argument("--server", default=server_default, help=server_help)


async def run(args: argparse.Namespace, api: operator.Api) -> int:
    """Run `discover`; its exit status."""
    settings = load_or_exit(os.environ)
    if not 0.1 <= args.timeout <= 10:
        print("rtsp-viewer discover: --timeout must be 0.1-10 seconds", file=sys.stderr)
        return 2
    try:
        probe = parse_address(args.probe_address or settings.discovery_address)
    except ValueError as error:
        print(f"rtsp-viewer discover: --probe-address {error}", file=sys.stderr)
        return 2
    credentials = Credentials(args.user, args.password) if args.user else None
    return await _run(args, api, probe, credentials, settings.source_policy())


async def _run(args: argparse.Namespace, api: operator.Api, probe: tuple[str, int],
               credentials: Credentials | None, policy: SourcePolicy) -> int:
    try:
        devices = await discover(wait=args.timeout, credentials=credentials, probe=probe, policy=policy)
    except (Failure, OSError) as error:
        print(f"rtsp-viewer discover: {error.message if isinstance(error, Failure) else error}", file=sys.stderr)
        return 1
    found: list[tuple[str, Profile]] = []
    for device in devices:
        if device.error is not None:
            print(f"-  {device.name}  {device.address}  {device.error}")
        for profile in device.profiles:
            size = f"{profile.width}x{profile.height}" if profile.width and profile.height else "?"
            if profile.url is None:
                print(f"-  {device.name}  {device.address}  {profile.name} {size}  {profile.error}")
                continue
            found.append((f"{device.name} {profile.name}", profile))
            print(f"{len(found)}  {device.name}  {device.address}  {profile.name} {size}  {mask_url(profile.url)}")
    if not devices:
        print("no ONVIF device answered", file=sys.stderr)
        return 1
    if args.add is None:
        return 0
    wanted = range(1, len(found) + 1) if args.add == "all" else _numbers(args.add, len(found))
    if wanted is None:
        print(f"rtsp-viewer discover: --add takes numbers 1-{len(found)}, comma-separated", file=sys.stderr)
        return 2
    status = 0
    for number in wanted:
        name, profile = found[number - 1]
        assert profile.url is not None
        try:
            made = await api.call("POST", "/api/streams/", expect=201,
                                  body={"name": name[:200], "url": with_credentials(profile.url, credentials)})
        except operator.StepFailed as failed:
            print(f"rtsp-viewer discover: {number} not added: {failed}", file=sys.stderr)
            status = 1
            continue
        print(f"added {number} as stream {made['id']}")
    return status


def _numbers(text: str, count: int) -> list[int] | None:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and 1 <= int(p) <= count for p in parts):
        return None
    return [int(p) for p in parts]
