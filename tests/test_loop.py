"""dicomfs.mount.loop: the leaner wait for FUSE requests, on a pipe and on a real mount."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyfuse3
import pytest
import trio
import trio.testing

from dicomfs.mount import loop

from .test_mount import wait_until

CHILD = Path(__file__).with_name("loop_child.py")


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


def test_a_waiting_request_is_taken_without_waiting(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    os.write(write_end, b"x")

    async def main() -> bool:
        readers = loop._Readers(read_end)
        with trio.fail_after(10):
            return await readers.wait()

    assert trio.run(main)


def test_a_stream_of_requests_leaves_room_for_other_tasks(pipe: tuple[int, int]) -> None:
    """The pipe is never empty, as the FUSE descriptor under load: the wait must still
    let the mount's other tasks (the access flush, the signals) run now and then."""
    read_end, write_end = pipe
    os.write(write_end, b"x")
    taken = 1000
    other_ran = 0

    async def other() -> None:
        nonlocal other_ran
        while True:
            other_ran += 1
            await trio.lowlevel.checkpoint()

    async def main() -> None:
        readers = loop._Readers(read_end)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            await trio.lowlevel.checkpoint()
            for _ in range(taken):
                assert await readers.wait()
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert other_ran >= taken // (loop.YIELD_EVERY + 1)


def test_many_tasks_wait_one_at_a_time_and_each_gets_a_request(pipe: tuple[int, int]) -> None:
    """trio lets one task at a time wait on a descriptor; pyfuse3's tasks all ask at once."""
    read_end, write_end = pipe
    served = []

    async def reader(readers: loop._Readers, number: int) -> None:
        assert await readers.wait()
        os.read(read_end, 1)  # as fuse_session_receive_buf takes the request
        served.append(number)

    async def main() -> None:
        readers = loop._Readers(read_end)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for number in range(5):
                    nursery.start_soon(reader, readers, number)
                await trio.testing.wait_all_tasks_blocked()
                for _ in range(5):
                    os.write(write_end, b"x")
                    await trio.testing.wait_all_tasks_blocked()

    trio.run(main)
    assert sorted(served) == list(range(5))


def test_the_waits_end_when_the_session_closes(pipe: tuple[int, int]) -> None:
    read_end, _ = pipe
    answers = []

    async def reader(readers: loop._Readers) -> None:
        answers.append(await readers.wait())

    async def main() -> None:
        readers = loop._Readers(read_end)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(reader, readers)
                await trio.testing.wait_all_tasks_blocked()
                trio.lowlevel.notify_closing(read_end)  # as pyfuse3.terminate() does

    trio.run(main)
    assert answers == [False, False, False]


def joined(threads: list[threading.Thread], seconds: float = 120) -> None:
    """Waits for the threads, all within one allowance (a stuck one fails the test)."""
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))


class Child:
    """loop_child.py mounted on a directory; unmounted and reaped whatever happens."""

    def __init__(self, mountpoint: Path, *flags: str) -> None:
        self.mountpoint = mountpoint
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), str(mountpoint), *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            self.mode = self.says().split()[-1:]
            wait_until(lambda: os.path.ismount(mountpoint), seconds=120)
        except BaseException:
            self.close()
            raise

    def says(self) -> str:
        """The child's next line."""
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def unmount(self) -> str:
        subprocess.run(["fusermount3", "-u", str(self.mountpoint)], check=True, timeout=60)
        out, err = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, err
        return out

    def close(self) -> None:
        # The kill comes first: a fork (fusermount3) would close the test's open
        # files on the mount, and each close waits for a daemon that may be stuck.
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=60)
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)],
                           capture_output=True, timeout=60)  # fmt: skip


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
@pytest.mark.parametrize("flags", [(), ("--stock",)], ids=["lean", "stock"])
def test_a_waiting_handler_does_not_hold_up_the_next_request(
    tmp_path: Path, flags: tuple[str, ...]
) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    child = Child(mountpoint, *flags)
    try:
        assert child.mode == (["stock"] if flags else ["lean"])
        slow: list[bytes] = []
        waiting = threading.Thread(
            target=lambda: slow.append((mountpoint / "slow").read_bytes()), daemon=True
        )
        waiting.start()
        assert child.says() == "slow waits"  # its handler holds a task from here on
        # Many requests from several threads while `slow` waits in its handler.
        results: list[bytes] = []
        readers = [
            threading.Thread(
                target=lambda: results.extend(
                    (mountpoint / "hello").read_bytes() for _ in range(200)
                ),
                daemon=True,
            )
            for _ in range(4)
        ]
        for thread in readers:
            thread.start()
        joined(readers)
        assert results == [b"hello, world\n"] * 800
        assert sorted(os.listdir(mountpoint)) == ["hello", "release", "slow"]
        assert slow == []
        assert (mountpoint / "release").read_bytes() == b"release\n"
        joined([waiting])
        assert slow == [b"slow\n"]
        assert child.unmount().split()[-1] == "restored"
    finally:
        child.close()


def test_an_untested_pyfuse3_gets_its_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyfuse3, "__version__", "99.0.0")
    assert not loop.is_adjustable()
    monkeypatch.setattr(pyfuse3, "__version__", sorted(loop.TESTED_VERSIONS)[-1])
    assert loop.is_adjustable()
    monkeypatch.setenv("DICOMFS_FUSE_LOOP", "stock")  # the operator's way back
    assert not loop.is_adjustable()
