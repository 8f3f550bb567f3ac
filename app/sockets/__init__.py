"""The media sockets (`/ws/stream`, `/ws/stream.ts`): served from ASGI before Quart
(`asgi`), their protocol's messages (`messages`), the per-socket tasks that run them
(`session`) and the direct send path (`wire`)."""
