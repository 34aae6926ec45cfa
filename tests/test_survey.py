"""Where reconcile and check begin: the store's files compared with the index's rows,
the same on one core as on several, and never a new instance taken for a vanished one."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from dicomfs.dicom import corpus
from dicomfs.store import files as store_files
from dicomfs.store import survey as survey_module
from dicomfs.store.index import Index
from dicomfs.store.indexer import parse, reconcile
from dicomfs.store.survey import Survey, survey


@pytest.fixture
def on_every_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """Share the work out between processes even for a small store."""
    monkeypatch.setattr(survey_module, "PARALLEL_FROM", 0)


def write_store(store: Path) -> None:
    """Top-level names whose keys interleave with their paths ("1.2/..." sorts after
    "1.2-x/..." and "1.2.dcm"), so that a share cut in the wrong place would lose or
    double a file."""
    for number, top in enumerate(["1.2", "1.2-x", "1.23", "a", "b", "c", "d", "é", "z"]):
        corpus.write_regular(
            store / top, patients=1, studies=1, series=1, instances=3, seed=number + 10
        )
        corpus.write(store / f"{top}.dcm", corpus.Spec(sop_uid=f"1.2.826.0.1.9.{number}"))
    (store / "junk.txt").write_text("not DICOM")
    (store / "c" / "junk.txt").write_text("not DICOM either")


def change_store(store: Path) -> tuple[str, str]:
    """One file changed, one new, one directory and one junk file gone."""
    changed = sorted(str(p.relative_to(store)) for p in (store / "b").rglob("*.dcm"))[0]
    os.utime(store / changed, ns=(1, 2_000_000_000_000_000_000))
    # Every UID fixed: generated ones differ in length run to run, and so would the file's size.
    new = corpus.Spec(
        study_uid="1.2.826.0.1.9.97", series_uid="1.2.826.0.1.9.98", sop_uid="1.2.826.0.1.9.99"
    )
    corpus.write(store / "new" / "n.dcm", new)
    shutil.rmtree(store / "1.2-x")
    (store / "c" / "junk.txt").unlink()
    return changed, "new/n.dcm"


def as_compared(found: Survey) -> tuple[object, ...]:
    return (
        found.unchanged,
        found.differing,
        found.changed,
        sorted(found.skipped),
        sorted(found.vanished),
        sorted(found.skipped_gone),
    )


def test_every_core_finds_what_one_core_finds(store: Path, index: Index, on_every_core: None):
    write_store(store)
    first = reconcile(index, store, workers=1)
    before = {rel for rel, _ in store_files.walk(store)}
    changed, new = change_store(store)

    alone = survey(index, store, workers=1)
    for workers in (2, 3, 16):
        assert as_compared(survey(index, store, workers=workers)) == as_compared(alone)

    gone = {rel for rel in before if rel.startswith("1.2-x/")}
    assert sorted(alone.vanished) == sorted(gone - {"1.2-x/junk.txt"})
    assert [rel for rel, _ in alone.differing] == sorted([changed, new])
    assert alone.changed == {changed}
    assert alone.skipped == [("junk.txt", "not a DICOM file")]
    assert alone.skipped_gone == ["c/junk.txt"]
    assert alone.unchanged == first.indexed - len(alone.vanished) - 1


def test_reconcile_on_every_core_leaves_the_index_as_one_core_does(
    tmp_path: Path, on_every_core: None
):
    indexes = []
    write_store(tmp_path / "written")  # once: corpus files of one spec differ run to run
    for workers in (1, 2):
        store = tmp_path / f"store{workers}"
        shutil.copytree(tmp_path / "written", store)
        with Index(store) as index:
            reconcile(index, store, workers=workers)
            change_store(store)
            reconcile(index, store, workers=workers)
            rows = index.conn.execute("SELECT path, size, sop_uid FROM instances ORDER BY path")
            indexes.append(rows.fetchall())
    assert indexes[0] == indexes[1]
    assert tuple(p for p, _, _ in indexes[0] if p.startswith("new/")) == ("new/n.dcm",)


def test_an_instance_received_while_the_survey_runs_is_not_taken_for_vanished(
    store: Path, index: Index, on_every_core: None, monkeypatch: pytest.MonkeyPatch
):
    """A receiver puts its file in place, then commits its row. The survey shares the
    store out before either happens, in a new top-level directory; its processes
    read the row, so they must walk the directory too."""
    write_store(store)
    reconcile(index, store)
    shares = survey_module._shares

    def receive_meanwhile(root: Path, workers: int) -> list[tuple[str, str | None]]:
        cut = shares(root, workers)
        rel = "1.2.826.0.1.77/1.2.826.0.1.78/1.2.826.0.1.79.dcm"
        corpus.write(store / rel, corpus.Spec(sop_uid="1.2.826.0.1.79"))
        state = store_files.state_of(store / rel)
        received = parse(rel, state, str(store))
        assert received.meta is not None
        with index.transaction():
            index.put_instance(received.meta, rel, state, received_at=time.time())
        return cut

    monkeypatch.setattr(survey_module, "_shares", receive_meanwhile)
    found = survey(index, store, workers=2)
    assert found.vanished == []
    assert found.differing == []


def test_a_process_with_threads_surveys_through_a_fork_server(
    store: Path, index: Index, on_every_core: None
):
    """Forking serve (receiver, mount and sweeper threads) could leave a child waiting
    on a lock another thread held: with other threads alive, children start clean."""
    write_store(store)
    reconcile(index, store)
    alone = survey(index, store, workers=1)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert survey_module._context().get_start_method() == "forkserver"
        assert as_compared(survey(index, store, workers=2)) == as_compared(alone)
    finally:
        stop.set()
        other.join()
    assert survey_module._context().get_start_method() == "fork"
