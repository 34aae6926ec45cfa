"""index.html and its pages of the other views, rendered from an index without a mount:
every study, escaped, with its directories in the page's view, newest receipt first,
kept studies marked, expiry told; one inline script and style, allowed by hash."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import time
from pathlib import Path

from dicomfs.dicom import corpus
from dicomfs.life import expiry
from dicomfs.mount import page, series_page
from dicomfs.store import views
from dicomfs.store.index import Index
from dicomfs.store.indexer import reconcile

DAY = 86400


def two_studies(store: Path) -> Index:
    """A study with markup in its names, received a day ago; a kept one, just now."""
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
    index = Index(store)
    reconcile(index, store)
    expiry.keep(index, "1.2.2", "study", None, "someone")
    now = time.time()
    for uid, received in (("1.2.1", now - DAY), ("1.2.2", now)):
        index.conn.execute(
            "UPDATE studies SET first_received = ?1, last_received = ?1 WHERE study_uid = ?2",
            (received, uid),
        )
        index.conn.execute(
            """UPDATE series SET last_received = ?1
               WHERE study = (SELECT id FROM studies WHERE study_uid = ?2)""",
            (received, uid),
        )
    return index


def rows_of(text: str) -> list[str]:
    body = text.split("</thead>")[1].split("</table>")[0]
    return [row.removesuffix("</tbody><tbody>") for row in re.split(r"<tr\b[^>]*>", body)[1:]]


def test_each_page_lists_every_study_escaped_with_its_directories_in_its_view(
    store: Path,
) -> None:
    with two_studies(store) as index:
        paths = {
            uid: views.study_paths(index.conn, study_id)
            for study_id, uid in index.conn.execute("SELECT id, study_uid FROM studies")
        }
        pages = {
            view: page.render(index, Path("/spl/dicom"), view, retention=7 * DAY).decode()
            for view in views.VIEW_NAMES
        }
    for view, text in pages.items():
        assert "<script>alert" not in text
        assert html.escape("<script>alert(1)</script>^X") in text
        assert f'data-base="/spl/dicom/{view}"' in text
        assert "2 studies, 2 images" in text
        rows = rows_of(text)
        assert "SMITH" in rows[0]  # received last, shown first
        assert "KEPT" in rows[0]
        assert "KEPT" not in rows[1]
        assert "in 6 days" in rows[1]  # a week's retention, used a day ago
        for uid, row in zip(("1.2.2", "1.2.1"), rows, strict=True):
            shown = re.findall(r"<code><bdi>(.*?)</bdi></code>", row)
            assert shown == [html.escape(p.removeprefix(f"{view}/")) for p in paths[uid][view]]
        for other in views.VIEW_NAMES:  # the switch to every view's page
            assert f'href="{views.page_name(other)}" data-view="{other}"' in text


def test_only_the_page_s_own_style_and_script_may_run_and_nothing_is_fetched(store: Path) -> None:
    with two_studies(store) as index:
        text = page.render(index, Path("/spl/dicom")).decode()
    (policy,) = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text)
    (script,) = re.findall(r"<script>(.*?)</script>", text, re.S)
    (style,) = re.findall(r"<style>(.*?)</style>", text, re.S)

    def allowed(body: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()

    assert f"script-src {allowed(script)}'" in policy
    assert f"style-src {allowed(style)}'" in policy
    assert "default-src 'none'" in policy
    assert not re.search(r"(src|href)=\"?(https?:)?//", text)  # no other host, ever
    assert text.count("<script") == 1


def test_without_a_retention_no_expiry_is_told(store: Path) -> None:
    with two_studies(store) as index:
        text = page.render(index, Path("/spl/dicom")).decode()
    assert "in 6 days" not in text
    assert "due" not in text
    assert "KEPT" in rows_of(text)[0]


def test_times_and_sizes_read_as_a_person_says_them() -> None:
    assert [page._ago(s) for s in (5, 125, 3 * 3600, DAY, 3 * DAY)] == [
        "just now", "2 min ago", "3 h ago", "1 day ago", "3 days ago",
    ]  # fmt: skip
    assert [page._from_now(s) for s in (-1, 30, 5 * 3600, 6.9 * DAY, 1.2 * DAY)] == [
        "due", "in 1 min", "in 5 h", "in 7 days", "in 1 day",
    ]  # fmt: skip
    assert [page.size_text(n) for n in (0, 999, 1000, 39_321_600, 5 * 10**12)] == [
        "0 B", "999 B", "1.0 KB", "39.3 MB", "5.0 TB",
    ]  # fmt: skip


def test_a_study_s_series_page_names_each_series_picture_and_directory(store: Path) -> None:
    corpus.write_regular(store, patients=1, studies=1, series=3, instances=2)
    with Index(store) as index:
        reconcile(index, store)
        (study,) = index.conn.execute("SELECT id FROM studies").fetchone()
        series = [row[0] for row in index.conn.execute("SELECT id FROM series ORDER BY id")]
        for view in views.VIEW_NAMES:
            text = series_page.render(index, study, view).decode()
            assert re.findall(r'<img src="([^"]+)"', text) == list(
                map(views.thumbnail_name, series)
            )
            shown = re.findall(r"<code><bdi>(.*?)</bdi></code>", text)
            expected = views.series_paths(index.conn, study, view)
            assert shown == [p.removeprefix(f"{view}/") for s in series for p in expected[s]]
            assert "<script" not in text
