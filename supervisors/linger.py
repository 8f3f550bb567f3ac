"""Waiting until something has had no viewer for a while (the upstreams' and the remuxers'
LINGER)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio


async def unwatched_for(seconds: float, watched: Callable[[], bool], changed: Callable[[], Awaitable[None]]) -> None:
    """Return once `watched()` has been false for `seconds` without a break; `changed`
    returns when it may have changed.

    It returns only while `watched()` is false, with no checkpoint after that check: a
    caller that ends what is watched right after it returns never ends it under a viewer
    that arrived in the same tick as the deadline (trio runs the tasks woken in one tick
    in any order). Cancellation: a checkpoint, nothing to undo."""
    while True:
        while watched():
            await changed()
        with trio.move_on_after(seconds):
            while not watched():
                await changed()
        if not watched():
            return
