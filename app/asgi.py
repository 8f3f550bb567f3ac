"""The ASGI app for Hypercorn's trio worker: `hypercorn -k trio app.asgi:app`.

It owns the process it is loaded in: its open-file limit is raised, and SIGTERM/SIGINT
end it as under `rtsp-viewer serve` (`app/process.py`)."""

from __future__ import annotations

from .factory import create_app
from .logs import configure
from .settings import load_or_exit

settings = load_or_exit()
configure(settings.log_level, settings.log_format)
app = create_app(settings, own_process=True)
