"""reactor.parked: a request goes out only once pynetdicom's own thread is blocked."""

from __future__ import annotations

import threading
import time
import types

from dicomfs.net import reactor


class FakeAssociation(threading.Thread):
    """pynetdicom's requestor loop, reduced to what parked() relies on."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self._reactor_checkpoint = threading.Event()
        self._reactor_checkpoint.set()
        self._is_paused = False
        self.passes = 0
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            time.sleep(0.001)
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            self.passes += 1


def test_parked_returns_with_the_reactor_blocked_and_pynetdicom_releases_it() -> None:
    assoc = FakeAssociation()
    assoc.start()
    try:
        with reactor.parked(assoc):
            before = assoc.passes
            time.sleep(0.05)
            assert assoc.passes == before  # it did not move while we held it
        assoc._reactor_checkpoint.set()  # as pynetdicom does when the operation ends
        deadline = time.monotonic() + 10
        while assoc.passes == before:
            assert time.monotonic() < deadline
            time.sleep(0.001)
    finally:
        assoc.stop = True
        assoc._reactor_checkpoint.set()


def test_parked_does_not_wait_for_an_association_whose_thread_has_ended() -> None:
    assoc = FakeAssociation()  # never started: nothing will ever wait
    started = time.monotonic()
    with reactor.parked(assoc):
        pass
    assert time.monotonic() - started < reactor.PATIENCE


def test_without_a_visible_waiter_list_a_lasting_pause_counts() -> None:
    opaque = types.SimpleNamespace()  # an Event whose waiters cannot be seen
    assert reactor._waiting_on(opaque, types.SimpleNamespace(_is_paused=True))  # type: ignore[arg-type]
    assert not reactor._waiting_on(opaque, types.SimpleNamespace(_is_paused=False))  # type: ignore[arg-type]
