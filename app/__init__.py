"""The web edge: REST and WebSocket routes over the engine in `supervisors`."""

from .factory import create_app
from .settings import Settings, load

__all__ = ["Settings", "create_app", "load"]
