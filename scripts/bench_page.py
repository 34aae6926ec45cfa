"""index.html benchmark: each view's page generated from 10,000 studies (time, size), and
opened from a real mount in Debian's headless Chromium beside the same page opened from
the plain disk; then the page of about 100,000 studies, which must still open."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import bench_corpus

from dicomfs.mount import page
from dicomfs.store import views
from dicomfs.store.index import Index
from dicomfs.store.indexer import reconcile

ROUNDS = 3


def _store(work: Path, studies: int, series: int, instances: int) -> Path:
    """A store of `studies` studies (one a patient), indexed; kept between runs."""
    store = work / f"page-{studies}"
    marker = store / ".complete"
    if not marker.exists():
        shutil.rmtree(store, ignore_errors=True)
        print(f"  writing {studies} studies...", file=sys.stderr, flush=True)
        bench_corpus.write_patients(store, range(studies), series=series, instances=instances)
        with Index(store) as index:
            reconcile(index, store)
        marker.touch()
    return store


def _open_seconds(browser: Any, url: str) -> tuple[float, int]:
    """Seconds from asking for the page to its script being done (rows searchable and
    sortable), and the rows it has. about:blank between, so each is a fresh load."""
    browser.get("about:blank")
    started = time.perf_counter()
    browser.get(url)
    while browser.execute_script("return document.documentElement.className") != "js":
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    rows = browser.execute_script("return document.querySelectorAll('tbody tr').length")
    return seconds, int(rows)


Mounted = Callable[[list[str], Path], AbstractContextManager[Any]]


def bench_page(work: Path, mounted: Mounted) -> None:
    """mounted: bench.mounted, which mounts with a command and unmounts after."""
    sys.path.insert(0, str(Path(__file__).parents[1]))  # the tests' own Chromium launcher
    from tests.browser import CHROMIUM, chromium

    if not Path(CHROMIUM).exists():
        print("page: skipped (needs chromium: scripts/install --test)")
        return
    print("index.html:")
    store = _store(work, 10_000, series=2, instances=3)
    mountpoint = work / "page-mount"
    with Index(store, readonly=True) as index:
        for view in views.VIEW_NAMES:
            best, size = float("inf"), 0
            for _ in range(ROUNDS):
                started = time.perf_counter()
                size = len(page.render(index, mountpoint, view, retention=7 * 86400))
                best = min(best, time.perf_counter() - started)
            print(f"  10,000 studies, {views.page_name(view):24} generated in {best:5.2f} s, "
                  f"{size / 1e6:4.1f} MB  (goals < 0.5 s, < 5 MB)")  # fmt: skip
    dicomfs = [sys.executable, "-m", "dicomfs", "mount", "--store", str(store)]
    with mounted(dicomfs, mountpoint), chromium() as browser:
        copy = work / "page-on-disk.html"
        shutil.copyfile(mountpoint / "index.html", copy)
        disk = min(_open_seconds(browser, copy.as_uri())[0] for _ in range(ROUNDS))
        opened = [
            _open_seconds(browser, (mountpoint / "index.html").as_uri()) for _ in range(ROUNDS)
        ]
        mount = min(seconds for seconds, _ in opened)
        print(f"  10,000 studies, opened in Chromium from the mount in {mount:.2f} s "
              f"(goal < 1 s); from the plain disk {disk:.2f} s: {mount / disk:.2f}x")  # fmt: skip
    large = _store(work, 99_999, series=1, instances=1)
    with mounted([*dicomfs[:-1], str(large)], mountpoint), chromium() as browser:
        seconds, rows = _open_seconds(browser, (mountpoint / "index.html").as_uri())
        print(f"  {rows:,} studies, opened in Chromium from the mount in {seconds:.2f} s "
              "(goal: it opens)")  # fmt: skip
