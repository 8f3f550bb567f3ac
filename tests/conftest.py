from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from app.sockets import wire
from tests.camera import Camera, CameraProcess, Feed
from tests.helpers import Server, start_server
from tests.postgres import Postgres
from tests.postgres import available as postgres_available

FEEDS = {"camera": Feed(), "camera_640": Feed(size="640x360", bitrate="1M")}


@pytest.fixture(scope="session")
def shared_cameras() -> Iterator[dict[str, CameraProcess]]:
    """One camera process per feed for the whole session (per xdist worker), started when
    a test first asks for it."""
    started: dict[str, CameraProcess] = {}
    yield started
    for camera in started.values():
        camera.close()


async def _camera(name: str, request: pytest.FixtureRequest, nursery: trio.Nursery,
                  shared: dict[str, CameraProcess]) -> Camera | CameraProcess:
    """The shared camera of that feed, or, for a test marked `own_camera` (it stalls, drops,
    redirects or counts the camera's sessions), a camera of its own in the test."""
    if request.node.get_closest_marker("own_camera") is None:
        if name not in shared:
            shared[name] = await trio.to_thread.run_sync(CameraProcess, FEEDS[name])
        return shared[name]
    cam = Camera(feeds={"live": FEEDS[name]})
    await nursery.start(cam.run)
    return cam


@pytest.fixture
async def camera(request: pytest.FixtureRequest, nursery: trio.Nursery,
                 shared_cameras: dict[str, CameraProcess]) -> Camera | CameraProcess:
    """A 320x240 H.264 camera (see `_camera`)."""
    return await _camera("camera", request, nursery, shared_cameras)


@pytest.fixture
async def camera_640(request: pytest.FixtureRequest, nursery: trio.Nursery,
                     shared_cameras: dict[str, CameraProcess]) -> Camera | CameraProcess:
    """A 640x360 1 Mbit/s H.264 camera, as the browser tests watch (see `_camera`)."""
    return await _camera("camera_640", request, nursery, shared_cameras)


@pytest.fixture
async def server(nursery: trio.Nursery) -> Server:
    return await start_server(nursery)


@pytest.fixture
def asgi_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sockets use Quart's `websocket.send`, as under a server without a wire."""

    async def no_wire(send: object) -> wire.Wire:
        raise wire.NoWire("the test asked for the ASGI path")

    monkeypatch.setattr(wire.Wire, "attach", no_wire)


@pytest.fixture(autouse=True)
def _collect_garbage():  # type: ignore[no-untyped-def]
    """Unclosed sockets or files show up as warnings (errors) in the test that leaked them."""
    yield
    import gc

    gc.collect()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """One real PostgreSQL server for the session (per xdist worker), started when a test
    first asks for it; each test gets a database of its own (`database_url`)."""
    if not postgres_available():
        pytest.skip("initdb and pg_ctl are not on PATH (Debian: apt-get install postgresql)")
    server = Postgres()
    server.start()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """The same test against each database DATABASE_URL may name: SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return "sqlite:///:memory:"
    server: Postgres = request.getfixturevalue("postgres_server")
    return server.new_database()
