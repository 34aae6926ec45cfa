"""Two different UIDs never share a path, a row or a file: received or indexed."""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
from pathlib import Path

import pydicom
import pytest

from dicomfs.dicom import corpus
from dicomfs.dicom.meta import MAX_TEXT, NotIndexable, read_meta
from dicomfs.store import files as store

from .peers import dcmtk, serving
from .test_cli import dicomfs

needs_dcmtk = pytest.mark.skipif(
    not Path("/usr/bin/storescu").exists(), reason="needs dcmtk (scripts/install --test)"
)

pytestmark = pytest.mark.filterwarnings("ignore:The value length")  # UIDs over 64 on purpose

ROOT = "1.2.826.0.1.3680043.8.498."


def colliding_pair() -> tuple[str, str]:
    """Two UIDs too long to be path components as they are (over 64 characters) whose
    8-hex SHA-1 prefixes, the path names of old, are equal: a birthday search."""
    seen: dict[str, str] = {}
    for number in itertools.count():
        uid = f"{ROOT}{number:044d}"
        prefix = hashlib.sha1(uid.encode()).hexdigest()[:8]
        if prefix in seen:
            return seen[prefix], uid
        seen[prefix] = uid
    raise AssertionError("unreachable")


def long_pair() -> tuple[str, str]:
    """Two 129-character UIDs that differ only in their last character."""
    common = ROOT + "1" * (128 - len(ROOT))
    return common + "1", common + "2"


PAIRS = {"colliding short hashes": colliding_pair(), "129 characters": long_pair()}


def write_pair(folder: Path, pair: tuple[str, str]) -> list[Path]:
    """One file per UID, in one series, with contents of their own."""
    paths = []
    for n, sop_uid in enumerate(pair, 1):
        spec = corpus.Spec(sop_uid=sop_uid, study_uid=ROOT + "1", series_uid=ROOT + "1.1",
                           instance_number=n, series_description=f"instance {n}")  # fmt: skip
        paths.append(folder / f"{n}.dcm")
        corpus.write(paths[-1], spec)
    return paths


def stored(store_dir: Path) -> dict[str, pydicom.Dataset]:
    """SOPInstanceUID -> the dataset of its stored file, for every row of the index."""
    conn = sqlite3.connect(store_dir / ".dicomfs" / "index.sqlite")
    rows = conn.execute("SELECT sop_uid, path FROM instances").fetchall()
    conn.close()
    return {sop: pydicom.dcmread(store_dir / path) for sop, path in rows}


def assert_both_kept(store_dir: Path, sent: list[Path]) -> None:
    originals = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, sent)}
    assert stored(store_dir) == originals
    files = [p for p in store_dir.rglob("*.dcm") if ".dicomfs" not in p.parts]
    assert len(files) == 2


def test_the_pairs_are_what_they_claim() -> None:
    a, b = PAIRS["colliding short hashes"]
    assert a != b
    assert min(len(a), len(b)) > 64
    assert hashlib.sha1(a.encode()).hexdigest()[:8] == hashlib.sha1(b.encode()).hexdigest()[:8]
    a, b = PAIRS["129 characters"]
    assert len(a) == len(b) == 129
    assert a[:128] == b[:128]


@pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS.keys())
def test_two_uids_get_two_paths(pair: tuple[str, str]) -> None:
    paths = [store.canonical_path(ROOT + "1", ROOT + "1.1", uid) for uid in pair]
    assert paths[0] != paths[1]


@needs_dcmtk
@pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS.keys())
def test_storescu_of_two_uids_keeps_two_instances(tmp_path: Path, pair: tuple[str, str]) -> None:
    sent = write_pair(tmp_path / "sent", pair)
    with serving(tmp_path / "store") as server:
        result = dcmtk("storescu", "-v", "-aec", "DICOMFS", "127.0.0.1", str(server.port),
                       *map(str, sent))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Received Store Response (Success)") == 2
    assert_both_kept(tmp_path / "store", sent)


@pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS.keys())
def test_index_of_two_uids_keeps_two_instances(tmp_path: Path, pair: tuple[str, str]) -> None:
    imported, found = tmp_path / "imported", tmp_path / "found"
    sent = write_pair(tmp_path / "cd", pair)
    imported.mkdir()
    dicomfs("index", "--store", str(imported), str(tmp_path / "cd"))
    assert_both_kept(imported, sent)
    write_pair(found / "incoming", pair)  # files already in a store, in a layout of their own
    dicomfs("index", "--store", str(found))
    assert_both_kept(found, sent)


def test_an_absurdly_long_uid_is_refused_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "long.dcm"
    corpus.write(path, corpus.Spec(sop_uid=ROOT + "1" * MAX_TEXT))
    with pytest.raises(NotIndexable, match=f"SOPInstanceUID longer than {MAX_TEXT}"):
        read_meta(str(path))


@needs_dcmtk
def test_a_copy_under_an_old_short_hash_name_is_still_ours(tmp_path: Path) -> None:
    """Files written before the long hashes stay valid: an instance resent under
    corrected UIDs still replaces its copy there."""
    store_dir, sop_uid = tmp_path / "store", ROOT + "9" * 60
    old_name = "x" + hashlib.sha1(sop_uid.encode()).hexdigest()[:8] + ".dcm"
    old = store_dir / "1.2.4" / "1.2.4.1" / old_name
    corpus.write(old, corpus.Spec(sop_uid=sop_uid, study_uid="1.2.4", series_uid="1.2.4.1"))
    corrected = tmp_path / "corrected.dcm"
    corpus.write(corrected, corpus.Spec(sop_uid=sop_uid, study_uid="1.2.5", series_uid="1.2.5.1"))
    with serving(store_dir) as server:  # indexes the old copy at start
        result = dcmtk("storescu", "-aec", "DICOMFS", "127.0.0.1", str(server.port),
                       str(corrected))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not old.exists()
    assert stored(store_dir)[sop_uid] == pydicom.dcmread(corrected)
