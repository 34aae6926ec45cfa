"""Debian's Chromium, headless and offline, driven by selenium through Debian's
chromedriver: what a lab user opens index.html in. Nothing is downloaded: selenium's
own manager is kept offline, and the browser is told not to reach any other host."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1366, 768  # the most common laptop screen


@contextlib.contextmanager
def chromium(width: int = WIDTH, height: int = HEIGHT) -> Iterator[webdriver.Chrome]:
    """A headless Chromium window of this size; quit whatever happens."""
    os.environ["SE_OFFLINE"] = "true"  # selenium never fetches a driver or browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new", f"--window-size={width},{height}", "--no-first-run",
        "--no-sandbox",  # CI runs the suite as root, where Chromium's sandbox cannot start
        "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--metrics-recording-only",
    ):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
