"""`dicomfs umount`: the mount goes, and so does the process that served it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomfs.dicom import corpus
from dicomfs.mount import run as mount
from dicomfs.store.index import Index
from dicomfs.store.indexer import reconcile

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


@dataclasses.dataclass
class Background:
    pid: int
    said: str  # what `dicomfs mount --background` printed
    state: Path  # $XDG_STATE_HOME, where the log goes


@contextlib.contextmanager
def background_mount(
    store: Path, mountpoint: Path, cwd: Path | None = None
) -> Iterator[Background]:
    """`dicomfs mount --background ... 2>&1 | cat`, as a script runs it: it returns once
    the mount is up, the pipe free. Ended if a test leaves it."""
    state = mountpoint.parent / "state"
    mountpoint.mkdir(exist_ok=True)
    pid = None
    try:
        result = subprocess.run(
            [DICOMFS, "mount", "--background", "--store", str(store), str(mountpoint)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60, cwd=cwd,
            env={**os.environ, "XDG_STATE_HOME": str(state)},
        )  # fmt: skip
        assert result.returncode == 0, result.stdout
        found = re.search(r"\(pid (\d+)\)", result.stdout)
        assert found is not None, result.stdout
        pid = int(found[1])
        yield Background(pid, result.stdout, state)
    finally:
        if pid is not None and not exited(pid):
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: exited(pid), seconds=30)
        if os.path.ismount(mountpoint) or _stale(mountpoint):  # ends a process we lost
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
    with background_mount(small_store(tmp_path), tmp_path / "mnt") as background:
        result = umount(tmp_path / "mnt")
        assert result.returncode == 0, result.stderr
        assert exited(background.pid)
        assert not os.path.ismount(tmp_path / "mnt")


def test_mount_background_frees_the_callers_pipe_and_logs_to_a_private_file(
    tmp_path: Path,
) -> None:
    store, mountpoint = small_store(tmp_path), tmp_path / "mnt"
    with background_mount(store, mountpoint) as background:
        assert sh("ls", str(mountpoint)).split() == sorted([*VIEWS, "index.html"])
        (log,) = (background.state / "dicomfs").iterdir()
        assert str(log) in background.said  # the "mounted ..." line says where
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert os.readlink(f"/proc/{background.pid}/fd/1") == os.devnull
        assert os.readlink(f"/proc/{background.pid}/fd/2") == str(log)
        assert "mounted" in log.read_text()
        # An error before the mount is up reaches the caller, from that log.
        again = subprocess.run(
            [DICOMFS, "mount", "--background", "--store", str(store), str(mountpoint)],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "XDG_STATE_HOME": str(background.state)},
        )  # fmt: skip
        assert again.returncode == 1
        assert again.stderr == (
            f"Error: {mountpoint} is already a mount point: dicomfs (pid {background.pid}) "
            "serves it\n"
        )


def test_serve_stopped_by_sigterm_does_not_say_someone_unmounted_it(tmp_path: Path) -> None:
    server = Serve(small_store(tmp_path), mount=tmp_path / "mnt")
    assert server.stop() == 0  # SIGTERM
    said = server.log.read_text()
    assert f"unmounted {tmp_path / 'mnt'}" in said
    assert "was unmounted" not in said


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
    with background_mount(small_store(tmp_path), tmp_path / "mnt", cwd=clone) as background:
        assert sh("ls", str(tmp_path / "mnt")).split() == sorted([*VIEWS, "index.html"])
        assert os.readlink(f"/proc/{background.pid}/cwd") == "/"  # it holds no directory busy
        result = umount(tmp_path / "mnt", cwd=clone)
        assert result.returncode == 0, result.stderr
        assert exited(background.pid)


def test_umount_says_plainly_what_is_wrong(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    result = umount(plain)
    assert (result.returncode, result.stderr) == (1, f"Error: {plain} is not mounted\n")
    home = tmp_path / "home"
    result = subprocess.run([DICOMFS, "umount"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "HOME": str(home), "DICOMFS_MOUNT": ""})  # fmt: skip
    expected = f"Error: nothing is mounted at {home / 'dicom'}\n"
    assert (result.returncode, result.stderr) == (1, expected)
    served = Mount(small_store(tmp_path), tmp_path / "mnt")
    try:
        inside = os.open(served.path / "by-uid", os.O_RDONLY | os.O_DIRECTORY)
        try:
            result = umount(served.path)
        finally:
            os.close(inside)
        assert result.returncode == 1
        assert result.stderr == (
            f"Error: {served.path} is busy: a process has a file or directory open there; "
            f"`fuser -vm {served.path}` shows which\n"
        )
        assert os.path.ismount(served.path)
        assert umount(served.path).returncode == 0
    finally:
        served.stop()


def test_the_foreground_mount_says_when_it_is_up_and_when_it_stops(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    served = Mount(store, tmp_path / "mnt")
    try:
        said = served.process.stderr
        assert said is not None
        ready, _, _ = select.select([said], [], [], 30)
        assert ready, "nothing said once mounted"
        assert said.readline() == f"mounted {store} on {served.path}; Ctrl-C unmounts\n"
    finally:
        served.stop()
    assert said.read() == f"unmounted {served.path}\n"
