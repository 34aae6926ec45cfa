from __future__ import annotations

import functools
import hashlib
import itertools
import os
import shutil
from pathlib import Path

import pydicom.data
import pytest

from dicomfs import names
from dicomfs.index import Index

PYDICOM_DATA = Path(pydicom.data.__file__).parent


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir()
    return path


@pytest.fixture
def index(store: Path):
    with Index(store) as idx:
        yield idx


def copy_pydicom_files(dest: Path) -> list[Path]:
    """pydicom's bundled real files (test files and every character set example)."""
    copied = []
    for sub in ("test_files", "charset_files"):
        for src in sorted((PYDICOM_DATA / sub).glob("*")):
            if src.is_file():
                target = dest / sub / src.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
                copied.append(target)
    return copied


def tree_fingerprint(root: Path) -> dict[str, tuple[str, int]]:
    """Content hash and mtime of every file under root but the index: proof nothing changed."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".dicomfs"]
        for name in filenames:
            path = Path(dirpath) / name
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            result[str(path.relative_to(root))] = (digest, path.stat().st_mtime_ns)
    return result


@functools.cache
def lookalike_uids_with_one_short_hash(stem: str = "1.2.3") -> tuple[str, str]:
    """Two odd UIDs of one safe form whose 8-hex suffixes are equal, as an attacker
    finds them: a birthday search over the separators a safe name turns into "_"."""
    seen: dict[str, str] = {}
    for n in itertools.count():
        uid = stem + "".join(f"{':,;/'[(n >> 2 * k) & 3]}9" for k in range(20))
        twin = seen.setdefault(names.short_hash(uid), uid)
        if twin != uid:
            return twin, uid
    raise AssertionError("unreachable")
