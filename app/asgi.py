"""The ASGI app for Hypercorn's trio worker: `hypercorn -k trio app.asgi:app`."""

from __future__ import annotations

from .factory import create_app
from .logs import configure
from .settings import load_or_exit

settings = load_or_exit()
configure(settings.log_level, settings.log_format)
app = create_app(settings)
