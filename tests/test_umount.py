"""`dicomfs umount`: the mount goes, and so does the process that served it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomfs import corpus, mount
from dicomfs.index import Index
from dicomfs.indexer import reconcile

from .peers import Serve
from .test_mount import VIEWS, Mount, _stale, sh, wait_until

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")

# The console script, as users run it: unlike `python -m dicomfs`, it imports
# nothing from the current directory.
DICOMFS = str(Path(sys.executable).with_name("dicomfs"))


def small_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    corpus.write(store / "a.dcm", corpus.Spec())
    with Index(store) as index:
        reconcile(index, store)
    return store


def umount(mountpoint: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DICOMFS, "umount", str(mountpoint)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)  # fmt: skip


def exited(pid: int) -> bool:
    """Gone, or a zombie that its new parent has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@contextlib.contextmanager
def background_mount(store: Path, mountpoint: Path, cwd: Path | None = None) -> Iterator[int]:
    """`dicomfs mount --background`; yields the pid it reports. Ended if a test leaves it."""
    # Files, not pipes: the mount process keeps its stderr open.
    out, err = mountpoint.parent / "mount.out", mountpoint.parent / "mount.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        result = subprocess.run(
            [DICOMFS, "mount", "--background", "--store", str(store), str(mountpoint)],
            stdout=stdout, stderr=stderr, timeout=120, cwd=cwd,
        )  # fmt: skip
    assert result.returncode == 0, err.read_text()
    pid = int(out.read_text().rsplit("(pid ", 1)[1].rstrip(")\n"))
    try:
        yield pid
    finally:
        if not exited(pid):
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: exited(pid), seconds=30)
        if os.path.ismount(mountpoint) or _stale(mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


def test_umount_returns_once_the_foreground_mount_has_exited(tmp_path: Path) -> None:
    served = Mount(small_store(tmp_path), tmp_path / "mnt")
    try:
        result = umount(served.path)
        assert result.returncode == 0, result.stderr
        assert served.process.poll() == 0
        assert not os.path.ismount(served.path)
    finally:
        served.stop()


def test_umount_returns_once_the_background_mount_has_exited(tmp_path: Path) -> None:
    with background_mount(small_store(tmp_path), tmp_path / "mnt") as pid:
        # Detached: `$(dicomfs mount --background ...)` does not wait for its stdout.
        assert os.readlink(f"/proc/{pid}/fd/1") == os.devnull
        result = umount(tmp_path / "mnt")
        assert result.returncode == 0, result.stderr
        assert exited(pid)
        assert not os.path.ismount(tmp_path / "mnt")


def test_serve_stops_whole_when_its_mount_is_unmounted(tmp_path: Path) -> None:
    server = Serve(small_store(tmp_path), mount=tmp_path / "mnt")
    try:
        result = umount(tmp_path / "mnt")
        assert result.returncode == 0, result.stderr
        assert server.process.poll() == 0
        assert "was unmounted: stopping" in server.log.read_text()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port)).close()
    finally:
        server.stop()


def test_umount_clears_a_mount_whose_process_was_killed(tmp_path: Path) -> None:
    crashed = Mount(small_store(tmp_path), tmp_path / "mnt")
    try:
        crashed.process.kill()
        crashed.process.wait()
        assert _stale(crashed.path)
        result = umount(crashed.path)
        assert result.returncode == 0, result.stderr
        assert not os.path.ismount(crashed.path)
        assert not _stale(crashed.path)
    finally:
        crashed.stop()


def test_umount_says_so_when_the_mount_process_does_not_exit(tmp_path: Path) -> None:
    hung = Mount(small_store(tmp_path), tmp_path / "mnt")
    try:
        hung.process.send_signal(signal.SIGSTOP)  # answers nothing, exits never
        started = time.monotonic()
        with pytest.raises(mount.MountError, match=rf"pid {hung.process.pid}\b.*did not exit"):
            mount.umount(hung.path, timeout=1.0)
        assert time.monotonic() - started < 30
        assert not os.path.ismount(hung.path)
        hung.process.send_signal(signal.SIGCONT)  # it finds its mount gone, and ends
        assert hung.process.wait(timeout=30) == 0
    finally:
        hung.process.send_signal(signal.SIGCONT)
        hung.stop()


def test_mount_background_from_a_directory_holding_a_dicomfs_folder(tmp_path: Path) -> None:
    clone = tmp_path / "clone"  # a checkout of some other version, say
    (clone / "dicomfs").mkdir(parents=True)
    (clone / "dicomfs" / "__init__.py").write_text("raise ImportError('not this dicomfs')\n")
    with background_mount(small_store(tmp_path), tmp_path / "mnt", cwd=clone) as pid:
        assert sh("ls", str(tmp_path / "mnt")).split() == sorted([*VIEWS, "index.html"])
        assert os.readlink(f"/proc/{pid}/cwd") == "/"  # it holds no directory busy
        result = umount(tmp_path / "mnt", cwd=clone)
        assert result.returncode == 0, result.stderr
        assert exited(pid)
