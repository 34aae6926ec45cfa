"""index.html rendered from an index, without a mount: every study, escaped, with its
directories, newest receipt first, kept studies marked."""

from __future__ import annotations

import html
import time
from pathlib import Path

from dicomfs.dicom import corpus
from dicomfs.life import expiry
from dicomfs.mount import page
from dicomfs.store import views
from dicomfs.store.index import Index
from dicomfs.store.indexer import reconcile


def test_the_page_lists_every_study_escaped_with_its_directories(store: Path) -> None:
    corpus.write(
        store / "a.dcm",
        corpus.Spec(patient_name="<script>alert(1)</script>^X", patient_id="P<1>",
                    study_uid="1.2.1", series_uid="1.2.1.1", sop_uid="1.2.1.1.1"),
    )  # fmt: skip
    corpus.write(
        store / "b.dcm",
        corpus.Spec(patient_name="SMITH^ANNA", patient_id="P2", study_uid="1.2.2",
                    series_uid="1.2.2.1", sop_uid="1.2.2.1.1", study_description="Knee"),
    )  # fmt: skip
    with Index(store) as index:
        reconcile(index, store)
        expiry.keep(index, "1.2.2", "study", None, "someone")
        index.conn.execute("UPDATE studies SET first_received = 1, last_received = 1")
        index.conn.execute(
            "UPDATE studies SET first_received = 2, last_received = 2 WHERE study_uid = '1.2.2'"
        )
        index.conn.execute("UPDATE instances SET received_at = 1")
        index.conn.execute("UPDATE instances SET received_at = 2 WHERE sop_uid = '1.2.2.1.1'")
        paths = {
            uid: views.study_paths(index.conn, study_id)
            for study_id, uid in index.conn.execute("SELECT id, study_uid FROM studies")
        }
        text = page.render(index, Path("/spl/dicom")).decode("utf-8")
    assert "<script>" not in text
    assert html.escape("<script>alert(1)</script>") in text
    assert "2 studies, 2 images" in text
    rows = text.split("<tr>")[2:]  # after the header row
    assert "SMITH" in rows[0]  # received last, shown first
    assert "KEPT" in rows[0]
    assert "KEPT" not in rows[1]
    for uid, row in zip(("1.2.2", "1.2.1"), rows, strict=True):
        for view in views.VIEW_NAMES:
            for path in paths[uid][view]:
                assert html.escape(f"/spl/dicom/{path}") in row, (uid, path)
    assert time.strftime("%Y-%m-%d") in text  # as of now
