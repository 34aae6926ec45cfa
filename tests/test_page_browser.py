"""index.html as a lab user sees it: opened from a real mount in Debian's Chromium, at
a laptop's 1366x768. Screenshots go to build/artifacts (DICOMFS_ARTIFACTS)."""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from dicomfs.dicom import corpus
from dicomfs.store import thumbnails, views
from dicomfs.store.index import Index
from dicomfs.store.indexer import reconcile

from .browser import chromium
from .peers import serving

ARTIFACTS = Path(os.environ.get("DICOMFS_ARTIFACTS", Path(__file__).parents[1] / "build/artifacts"))
WAIT = 30  # seconds a condition may take on a busy machine
PYDICOM_FILES = ("CT_small.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm")


class Site:
    def __init__(self, mount: Path, store: Path, browser: Chrome) -> None:
        self.mount, self.store, self.browser = mount, store, browser

    def open(self, name: str = "index.html", fragment: str = "") -> None:
        """A page as a user opens it: their remembered view forgotten first."""
        self.browser.get((self.mount / name).as_uri())
        self.browser.execute_script("localStorage.clear()")
        self.browser.get("about:blank")  # or a new fragment alone would not load the page again
        self.browser.get((self.mount / name).as_uri() + fragment)
        self.wait_for(lambda: self.script("return document.documentElement.className") == "js")

    def script(self, code: str, *arguments: object) -> object:
        return self.browser.execute_script(code, *arguments)

    def wait_for(self, condition: object) -> None:
        WebDriverWait(self.browser, WAIT).until(lambda _: condition())  # type: ignore[operator]

    def shown_rows(self) -> list[list[str]]:
        """The text of each row's cells, in order, of the rows not filtered out."""
        return self.script(
            """return Array.from(document.querySelectorAll('tbody tr'))
                 .filter((row) => !row.hidden)
                 .map((row) => Array.from(row.cells, (cell) => cell.textContent))"""
        )  # type: ignore[return-value]

    def search(self, text: str) -> None:
        box = self.browser.find_element(By.ID, "q")
        box.clear()
        box.send_keys(text)

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.browser.save_screenshot(str(ARTIFACTS / name))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("page")
    store, mount = root / "store", root / "mnt"
    # More than a hundred studies: the page groups its rows by the hundred (page.ROWS_PER_BODY).
    corpus.write_regular(store / "incoming", patients=60, studies=2, series=1, instances=1)
    corpus.write_awkward(store / "odd")  # <script> names, 200 characters, Greek, Japanese...
    for name in PYDICOM_FILES:  # as pydicom ships them: uncompressed, JPEG, JPEG 2000
        (store / "pydicom" / name).mkdir(parents=True)
        shutil.copy(str(get_testdata_file(name, download=False)), store / "pydicom" / name)
    with Index(store) as index:
        reconcile(index, store)
    with serving(store, mount=mount), chromium() as browser:
        yield Site(mount, store, browser)


def fold(text: str) -> str:
    return "".join(
        c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c)
    ).lower()


def study_count(store: Path) -> int:
    with sqlite3.connect(store / ".dicomfs" / "index.sqlite") as conn:
        return int(conn.execute("SELECT count(*) FROM studies").fetchone()[0])


def test_every_study_is_a_row_and_no_name_runs(site: Site) -> None:
    site.open()
    rows = site.shown_rows()
    try:
        alert = site.browser.switch_to.alert.text
    except NoAlertPresentException:
        alert = None
    assert len(rows) == study_count(site.store)
    assert any("<script>alert(1)</script>" in cell for row in rows for cell in row)  # as text
    assert site.script("return document.querySelectorAll('tbody script').length") == 0
    assert alert is None  # and never run


def test_the_page_fits_a_laptop_screen_with_every_directory_in_view(site: Site) -> None:
    site.open()
    site.shot("index-1366x768.png")
    assert site.script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    width = site.script("return document.documentElement.clientWidth")
    # Each row's directory and its copy button lie on the screen, whatever the names.
    rights = site.script(
        """return Array.from(document.querySelectorAll('td.p button'),
                             (b) => b.getBoundingClientRect().right)"""
    )
    assert rights
    assert max(rights) <= width  # type: ignore[type-var, arg-type]
    # A value cut short is shown whole on hover.
    long_name = site.browser.find_element(By.XPATH, "//td[starts-with(text(), 'LLLLLLLL')]")
    site.browser.execute_script(
        "arguments[0].dispatchEvent(new MouseEvent('mouseover', {bubbles: true}))", long_name
    )
    assert long_name.get_attribute("title").startswith("L" * 100)


def test_search_ignores_case_and_accents_and_stays_in_the_link(site: Site) -> None:
    site.open()
    everything = site.shown_rows()
    site.search("MULLER jurgen")
    matching = [row for row in everything if "muller" in fold(row[0]) and "jurgen" in fold(row[0])]
    site.wait_for(lambda: len(site.shown_rows()) == len(matching))
    assert site.shown_rows() == matching
    assert len(matching) == 1
    site.wait_for(lambda: "#q=MULLER+jurgen" in site.browser.current_url)
    link = site.browser.current_url
    # The link, sent to a colleague, opens on the same rows.
    site.open(fragment="#" + link.split("#", 1)[1])
    assert site.shown_rows() == matching
    # Dates as a user types them: ISO, DICOM, a month; a range as dicomfs find takes it.
    day = max(row[2] for row in everything)  # the corpus's latest study date
    for typed, wanted in ((day, day), (day.replace("-", ""), day), (day[:7], day[:7])):
        site.search(typed)
        on_that_day = [row for row in everything if row[2].startswith(wanted)]
        site.wait_for(lambda: site.shown_rows() == on_that_day)  # noqa: B023 (waited for here)
        assert 0 < len(on_that_day) < len(everything)
    site.search(f"{day[:4]}-01-01..{day}")
    that_year = [row for row in everything if row[2][:4] == day[:4]]
    site.wait_for(lambda: site.shown_rows() == that_year)
    # Only what identifies a study is searched: not sizes, times or "in 7 days".
    site.search("days")
    site.wait_for(lambda: site.shown_rows() == [])


def test_a_click_on_a_column_sorts_by_it(site: Site) -> None:
    site.open()
    received = [row[8] for row in site.shown_rows()]
    assert received == sorted(received, reverse=True)  # newest received first
    patient = site.browser.find_element(By.XPATH, "//th[text()='Patient']")
    patient.click()  # names: A to Z first
    site.wait_for(lambda: patient.get_attribute("aria-sort") == "ascending")
    date = site.browser.find_element(By.XPATH, "//th[text()='Date']")
    date.click()
    site.wait_for(lambda: date.get_attribute("aria-sort") == "descending")
    dates = [row[2] for row in site.shown_rows()]
    assert dates == sorted(dates, reverse=True)
    date.click()
    site.wait_for(lambda: date.get_attribute("aria-sort") == "ascending")
    assert [row[2] for row in site.shown_rows()] == sorted(dates)
    site.wait_for(lambda: "sort=2%2Cascending" in site.browser.current_url)


def test_the_copy_button_gives_a_cd_to_the_study_s_directory(site: Site) -> None:
    site.open()
    buttons = site.browser.find_elements(By.CSS_SELECTOR, "td.p button")
    copied = site.browser.find_element(By.ID, "copied")
    for button in (buttons[0], buttons[-1]):
        button.click()
        site.wait_for(lambda: copied.text.startswith("Copied: cd "))
        command = copied.get_attribute("data-command")
        words = shlex.split(command)
        assert words[0] == "cd"
        assert Path(words[1]).is_dir(), command
        assert Path(words[1]).parent.parent == site.mount / "by-patient"


def test_the_view_a_user_chooses_is_kept_for_the_next_visit(site: Site) -> None:
    site.open()
    site.search("jurgen")
    site.browser.find_element(By.LINK_TEXT, "by-date").click()
    site.wait_for(lambda: views.page_name("by-date") in site.browser.current_url)
    site.wait_for(lambda: len(site.shown_rows()) == 1)  # the search came along
    (directory,) = site.browser.find_elements(By.CSS_SELECTOR, "tr:not([hidden]) td.p code")
    assert (site.mount / "by-date" / directory.text).is_dir()
    # index.html, opened again, shows the view chosen.
    site.browser.get((site.mount / "index.html").as_uri())
    site.wait_for(lambda: views.page_name("by-date") in site.browser.current_url)
    site.browser.find_element(By.LINK_TEXT, "by-patient").click()
    site.wait_for(lambda: "/index.html" in site.browser.current_url)
    site.browser.get((site.mount / "index.html").as_uri())  # and that choice is kept too
    site.wait_for(lambda: site.script("return document.documentElement.className") == "js")
    assert site.browser.current_url.split("#")[0].endswith("/index.html")


def test_a_click_on_a_study_shows_its_series_with_a_picture_of_each(site: Site) -> None:
    site.open()
    for name in PYDICOM_FILES:
        patient_id = str(dcmread(get_testdata_file(name, download=False)).PatientID)
        row = site.browser.find_element(By.XPATH, f"//tbody/tr[td[2]='{patient_id}']")
        row.find_element(By.CSS_SELECTOR, "td").click()
        panel = row.find_element(By.XPATH, "following-sibling::tr[1]")
        assert panel.get_attribute("class") == "series"
        site.browser.switch_to.frame(panel.find_element(By.TAG_NAME, "iframe"))
        try:
            (picture,) = site.browser.find_elements(By.TAG_NAME, "img")
            site.wait_for(lambda: site.script("return arguments[0].complete", picture))  # noqa: B023
            assert int(picture.get_attribute("naturalWidth") or 0) > 0, name
            thumbnail = site.mount / picture.get_attribute("src").rsplit("/", 1)[1]
            assert thumbnail.read_bytes() != thumbnails.placeholder("no preview"), name
            (directory,) = site.browser.find_elements(By.TAG_NAME, "code")
            assert (site.mount / "by-patient" / directory.text).is_dir()
        finally:
            site.browser.switch_to.default_content()
        site.shot(f"series-{name}.png")
        row.find_element(By.CSS_SELECTOR, "td").click()  # and hidden again
        site.wait_for(lambda: not site.browser.find_elements(By.CSS_SELECTOR, "tr.series"))
