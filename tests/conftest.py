from __future__ import annotations

import pytest
import trio

from app.sockets import wire
from tests.camera import Camera
from tests.helpers import Server, start_server


@pytest.fixture
async def camera(nursery: trio.Nursery) -> Camera:
    cam = Camera()
    await nursery.start(cam.run)
    return cam


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
