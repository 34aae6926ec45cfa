"""Keeping pynetdicom's association thread off the responses to our own requests.

A requesting association has a thread of its own (pynetdicom calls it the
reactor) that takes any message off the DIMSE queue whenever it is not paused.
send_c_find() and its siblings pause it before they send, but racily: they wait
for a flag the reactor sets just before it blocks, and a reactor that has just
been released may have set that flag and still be on its way to the queue. It
then takes one of the responses (pynetdicom logs "Received unexpected C-FIND
service message") and the caller never sees it: a PACS's match lost without a
word (seen: about one C-FIND response in a few hundred on a busy machine).

parked() waits until the reactor is blocked for good before a request goes out.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

PATIENCE = 10.0  # seconds: the reactor parks within milliseconds unless it is gone
FALLBACK_SETTLE = 0.05  # without a way to see the reactor wait: how long it must seem paused


@contextlib.contextmanager
def parked(assoc: Any) -> Iterator[None]:
    """Run the body (a send_c_find(), send_c_get(), ... and the reading of its
    responses) with the association's reactor blocked; pynetdicom releases it again
    when the operation ends."""
    checkpoint: threading.Event = assoc._reactor_checkpoint
    checkpoint.clear()
    deadline = time.monotonic() + PATIENCE
    while assoc.is_alive() and not _waiting_on(checkpoint, assoc):
        if time.monotonic() > deadline:
            log.warning("pynetdicom's association thread did not pause; going on")
            break
        time.sleep(0.0005)
    yield


def _waiting_on(checkpoint: threading.Event, assoc: Any) -> bool:
    """Is a thread (the reactor: the only one that waits on it) blocked on checkpoint?"""
    waiters = getattr(getattr(checkpoint, "_cond", None), "_waiters", None)
    if waiters is not None:
        return len(waiters) > 0
    # A Python whose Event hides its waiters: paused, and still paused a while later.
    if not assoc._is_paused:
        return False
    time.sleep(FALLBACK_SETTLE)
    return bool(assoc._is_paused)
