from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pydicom.data
import pytest

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
