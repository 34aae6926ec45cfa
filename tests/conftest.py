from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pydicom.data
import pytest

from dicomfs.dicom import corpus, names
from dicomfs.store.index import INDEX_VARIABLE, Index, migrations

from . import postgres

PYDICOM_DATA = Path(pydicom.data.__file__).parent


def back_to_v5(conn: sqlite3.Connection) -> None:
    """Take a current index back to schema 5, for tests of upgrades from older ones."""
    conn.executescript(  # schema 10 undone: receipt times kept by put_instance
        "DROP TRIGGER instances_received; DROP TRIGGER instances_received_again;"
    )
    # Schema 9 undone: patients keyed by one string, ID and name with a NUL between.
    conn.execute(f"CREATE TABLE patients_v8 {migrations.TREE_TABLES['patients']}")
    conn.execute(
        """INSERT INTO patients_v8 SELECT id, patient_id || char(0) || patient_name,
               patient_id, patient_name, birth_date, name_folded, dir_name FROM patients"""
    )
    conn.executescript(
        """DROP TABLE patients; ALTER TABLE patients_v8 RENAME TO patients;
           CREATE INDEX patients_patient_id ON patients(patient_id);
           CREATE INDEX patients_dir_name ON patients(dir_name);
           CREATE INDEX patients_patient_id_nocase ON patients(patient_id COLLATE NOCASE);"""
    )
    journal = conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'changes'"
                           " OR name LIKE 'changes_%' AND type = 'trigger'").fetchall()  # fmt: skip
    for (name,) in journal:
        if name != "changes":
            conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DROP TABLE changes")
    conn.executescript(
        """DROP TRIGGER instances_counted_in; DROP TRIGGER instances_counted_out;
           DROP TRIGGER instances_recounted; DROP TABLE series_counts;
           CREATE INDEX series_last_access ON series(last_access);
           CREATE INDEX series_last_received ON series(last_received);
           CREATE INDEX instances_received_at ON instances(received_at);"""
    )  # the indexes schema 8 dropped


@pytest.fixture(autouse=True, scope="session")
def no_configuration_of_this_machine(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test (and every dicomfs it starts) reads an empty configuration file,
    never this machine's /etc/dicomfs/dicomfs.toml or the user's; a test of the
    lookup itself sets its own."""
    home = tmp_path_factory.mktemp("config-home")
    (home / "empty.toml").touch()
    os.environ["DICOMFS_CONFIG"] = str(home / "empty.toml")
    os.environ["XDG_CONFIG_HOME"] = str(home)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir()
    return path


@pytest.fixture
def index(store: Path):
    with Index(store) as idx:
        yield idx


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[postgres.Cluster]:
    """One throwaway PostgreSQL cluster for the session, started by the first test that
    asks for it (fsync off: a crash test starts a postgres.Cluster of its own)."""
    if postgres.server_bin() is None:
        pytest.skip(postgres.SKIP_REASON)
    with postgres.Cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: postgres.Cluster) -> str:
    """The URL of a new, empty database of this test's own."""
    return postgres_cluster.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def index_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once with each engine: the SQLite file beside the store, then a
    new PostgreSQL database ($DICOMFS_INDEX, which every dicomfs the test starts
    inherits). A module asks for it with pytestmark = usefixtures("index_engine"),
    before any fixture that opens the index."""
    if request.param == "postgresql":
        only = request.node.get_closest_marker("sqlite_only")
        if only is not None:
            pytest.skip(f"SQLite's alone: {only.args[0]}")
        monkeypatch.setenv(INDEX_VARIABLE, request.getfixturevalue("postgres_url"))
    return str(request.param)


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


# Three study UIDs that a safe name shows alike, as 1.2.3_4.
LOOKALIKES = ("1.2.3/4", "1.2.3_4", "1.2.3\\4")


def write_lookalike_uids(root: Path) -> list[corpus.Spec]:
    """The three LOOKALIKES studies, each with three series and each series three
    instances whose UIDs look alike the same way, all numbered 1; and in the first
    series two more instances whose suffixes collide too. Returns what was written."""
    specs = []
    for study in LOOKALIKES:
        for series in (f"{study}.5{sep}6" for sep in "/_\\"):
            for sop in (f"{series}.7{sep}8" for sep in "/_\\"):
                specs.append(corpus.Spec(study_uid=study, series_uid=series, sop_uid=sop))
    first = specs[0]
    specs += [
        dataclasses.replace(first, sop_uid=sop)
        for sop in lookalike_uids_with_one_short_hash(first.series_uid)
    ]
    for number, spec in enumerate(specs):
        corpus.write(root / f"lookalike{number}.dcm", spec)
    return specs
