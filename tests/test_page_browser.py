"""index.html as a lab user sees it: opened from a real mount in Debian's Chromium."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By

from dicomfs.dicom import corpus
from dicomfs.store.index import Index
from dicomfs.store.indexer import reconcile

from .browser import chromium
from .peers import serving


def test_the_page_opens_from_the_mount_with_every_study_and_runs_no_name(tmp_path: Path) -> None:
    store, mount = tmp_path / "store", tmp_path / "mnt"
    corpus.write_regular(store / "incoming", patients=3, studies=2, series=1, instances=1)
    corpus.write_awkward(store / "odd")  # a PatientName of <script>alert(1)</script>, ...
    with Index(store) as index:
        reconcile(index, store)
    with sqlite3.connect(store / ".dicomfs" / "index.sqlite") as conn:
        (studies,) = conn.execute("SELECT count(*) FROM studies").fetchone()
    with serving(store, mount=mount), chromium() as browser:
        browser.get((mount / "index.html").as_uri())
        rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
        cells = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "tbody td")]
        with_markup = browser.execute_script(
            "return document.querySelectorAll('tbody script').length"
        )
        try:
            alert = browser.switch_to.alert.text
        except NoAlertPresentException:
            alert = None
    assert len(rows) == studies
    assert any("<script>alert(1)</script>" in text for text in cells)  # shown as text
    assert (with_markup, alert) == (0, None)  # and never run
