"""The store's files: written whole or not at all, opened and deleted only below the store,
never through a symbolic link, with or without the kernel's openat2."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dicomfs.store import files

STUDY, SERIES, SOP = "1.2.840.1", "1.2.840.1.2", "1.2.840.1.2.3"


@pytest.fixture(params=["openat2", "one component at a time"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The same rules on a kernel with openat2 and on one without (before Linux 5.6)."""
    if request.param != "openat2":
        monkeypatch.setattr(files, "openat2", lambda *args, **kwargs: None)
    return str(request.param)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the store with a file that must never be read, written or deleted."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "victim.dcm").write_bytes(b"not the store's")
    return path


def errno_of(call: Callable[[], object]) -> int | None:
    """The errno the call fails with; None if it does not."""
    try:
        call()
    except OSError as exc:
        return exc.errno
    return None


def spool(store: Path) -> list[str]:
    return sorted(os.listdir(store / ".dicomfs" / "tmp"))


class Watching(io.RawIOBase):
    """A source that notes, while it is being copied, whether the target is visible yet."""

    def __init__(self, data: bytes, target: Path, fail: bool = False) -> None:
        self.data, self.target, self.fail = io.BytesIO(data), target, fail
        self.seen_while_writing: list[bool] = []

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        self.seen_while_writing.append(self.target.exists())
        if self.fail and self.data.tell():
            raise OSError(errno.EIO, "the sender went away")
        count = self.data.readinto(buffer)
        return count


# --- writing --------------------------------------------------------------------------------


def test_a_file_is_visible_only_once_complete_and_from_the_stores_own_tmp(
    store: Path, kernel: str
) -> None:
    rel = files.canonical_path(STUDY, SERIES, SOP)
    target = store / rel
    data = os.urandom(3 * 1024 * 1024)  # more than one copy chunk
    source = Watching(data, target)
    state = files.write_atomically(store, rel, io.BufferedReader(source, 64 * 1024))
    assert target.read_bytes() == data
    assert source.seen_while_writing
    assert not any(source.seen_while_writing)
    assert (state.size, state.mtime_ns) == (len(data), target.stat().st_mtime_ns)
    assert spool(store) == []  # renamed from there, nothing left behind


def test_a_write_that_fails_leaves_nothing(store: Path, kernel: str) -> None:
    rel = files.canonical_path(STUDY, SERIES, SOP)
    source = Watching(os.urandom(3 * 1024 * 1024), store / rel, fail=True)
    with pytest.raises(OSError, match="the sender went away"):
        files.write_atomically(store, rel, io.BufferedReader(source, 64 * 1024))
    assert not (store / rel).exists()
    assert spool(store) == []


def test_a_file_written_again_replaces_the_old_one_whole(store: Path) -> None:
    rel = files.canonical_path(STUDY, SERIES, SOP)
    files.write_atomically(store, rel, io.BytesIO(b"first" * 1000))
    files.write_atomically(store, rel, io.BytesIO(b"second"))
    assert (store / rel).read_bytes() == b"second"


def test_a_directory_that_is_a_link_is_never_written_through(
    store: Path, outside: Path, kernel: str
) -> None:
    (store / STUDY).symlink_to(outside)
    rel = files.canonical_path(STUDY, SERIES, SOP)
    assert errno_of(lambda: files.write_atomically(store, rel, io.BytesIO(b"data"))) == errno.ELOOP
    assert sorted(os.listdir(outside)) == ["victim.dcm"]
    assert spool(store) == []


def test_a_spool_that_is_a_link_is_refused(store: Path, outside: Path, kernel: str) -> None:
    (store / ".dicomfs").mkdir()
    (store / ".dicomfs" / "tmp").symlink_to(outside)
    with pytest.raises(files.UnsafeStore, match="is a symbolic link"):
        files.check_own_dirs(store)
    assert (
        errno_of(lambda: files.write_atomically(store, "a.dcm", io.BytesIO(b"data"))) == errno.ELOOP
    )
    assert sorted(os.listdir(outside)) == ["victim.dcm"]


def test_odd_uids_never_share_a_path_and_plain_ones_are_kept() -> None:
    plain = files.canonical_path(STUDY, SERIES, SOP)
    assert plain == f"{STUDY}/{SERIES}/{SOP}.dcm"
    odd = ["1.2.3/4", "1.2.3_4", "1.2.3\\4", "../..", "1." + "2" * 63, ""]
    parts = [files.uid_component(uid) for uid in odd]
    assert len(set(parts)) == len(parts)
    for uid, part in zip(odd, parts, strict=True):
        assert "/" not in part
        assert part not in ("", ".", "..")
        assert part == uid or (part.startswith("x") and len(part) == 65), part
    assert files.uid_component("1." + "2" * 62) == "1." + "2" * 62  # 64 characters: plain


# --- opening ----------------------------------------------------------------------------------


@pytest.fixture
def opened(store: Path) -> Iterator[int]:
    with files.opened(store) as root:
        yield root


def test_a_file_below_the_store_opens(store: Path, opened: int, kernel: str) -> None:
    (store / "a" / "b").mkdir(parents=True)
    (store / "a" / "b" / "c.dcm").write_bytes(b"DICM")
    fd = files.open_beneath(opened, "a/b/c.dcm", os.O_RDONLY)
    try:
        assert os.read(fd, 10) == b"DICM"
    finally:
        os.close(fd)
    with open("a/b/c.dcm", "rb", opener=files.opener(opened)) as file:
        assert file.read() == b"DICM"


@pytest.mark.parametrize(
    ("make", "rel", "code"),
    [
        ("file link", "link.dcm", errno.ELOOP),
        ("directory link", "linked/victim.dcm", errno.ELOOP),
        ("", "../outside/victim.dcm", errno.EXDEV),
        ("", "a/../../outside/victim.dcm", errno.EXDEV),
    ],
)
def test_nothing_outside_the_store_is_opened(
    store: Path, outside: Path, opened: int, kernel: str, make: str, rel: str, code: int
) -> None:
    (store / "a").mkdir()
    if make == "file link":
        (store / "link.dcm").symlink_to(outside / "victim.dcm")
    elif make == "directory link":
        (store / "linked").symlink_to(outside)
    assert errno_of(lambda: os.close(files.open_beneath(opened, rel, os.O_RDONLY))) == code


def test_an_absolute_path_is_not_below_the_store(
    store: Path, outside: Path, opened: int, kernel: str
) -> None:
    assert (
        errno_of(
            lambda: os.close(files.open_beneath(opened, str(outside / "victim.dcm"), os.O_RDONLY))
        )
        == errno.EXDEV
    )


# --- deleting and walking ---------------------------------------------------------------------


def test_deleting_removes_the_files_and_the_directories_left_empty_never_the_store(
    store: Path, kernel: str
) -> None:
    for name in ("1.dcm", "2.dcm"):
        files.write_atomically(store, f"{STUDY}/{SERIES}/{name}", io.BytesIO(b"x"))
    files.write_atomically(store, f"{STUDY}/other/3.dcm", io.BytesIO(b"x"))
    files.delete_files(store, [f"{STUDY}/{SERIES}/1.dcm", f"{STUDY}/{SERIES}/2.dcm"])
    assert sorted(p.relative_to(store).as_posix() for p in store.rglob("*.dcm")) == [
        f"{STUDY}/other/3.dcm"
    ]
    assert not (store / STUDY / SERIES).exists()
    files.delete_files(store, [f"{STUDY}/other/3.dcm", "gone/already.dcm"])
    assert sorted(os.listdir(store)) == [".dicomfs"]  # the store itself stays


@pytest.mark.parametrize(
    "rel", ["../outside/victim.dcm", "linked/victim.dcm", "a/../../outside/victim.dcm", "ABS"]
)
def test_deleting_reaches_nothing_outside_the_store(
    store: Path, outside: Path, kernel: str, rel: str
) -> None:
    (store / "a").mkdir()
    (store / "linked").symlink_to(outside)
    rel = str(outside / "victim.dcm") if rel == "ABS" else rel
    files.delete_files(store, [rel])
    assert (outside / "victim.dcm").read_bytes() == b"not the store's"
    assert (store / "linked").is_symlink()


def test_deleting_a_link_removes_the_link_alone(store: Path, outside: Path, kernel: str) -> None:
    (store / "link.dcm").symlink_to(outside / "victim.dcm")
    files.delete_files(store, ["link.dcm"])
    assert not os.path.lexists(store / "link.dcm")
    assert (outside / "victim.dcm").exists()


def test_walking_lists_the_regular_files_but_the_index_and_follows_no_link(
    store: Path, outside: Path
) -> None:
    files.write_atomically(store, "a/b.dcm", io.BytesIO(b"12345"))
    (store / "c.dcm").write_bytes(b"1")
    (store / "linked").symlink_to(outside)
    (store / "link.dcm").symlink_to(outside / "victim.dcm")
    (store / ".dicomfs" / "index.sqlite").write_bytes(b"")
    (store / "sub" / ".dicomfs").mkdir(parents=True)  # only the store's own is the index's
    (store / "sub" / ".dicomfs" / "d.dcm").write_bytes(b"12")
    walked = dict(files.walk(store))
    assert sorted(walked) == ["a/b.dcm", "c.dcm", "sub/.dicomfs/d.dcm"]
    assert walked["a/b.dcm"] == files.state_of(store / "a" / "b.dcm")
    assert walked["a/b.dcm"].size == 5
