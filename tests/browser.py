"""Debian's headless Chromium driven through Debian's chromedriver, for the web UI tests.

Both binaries come from apt (``chromium`` and ``chromium-driver``, see scripts/setup.sh).
Selenium skips Selenium Manager, which would try to download a browser and a driver, because
the Service gets the driver's path. ``SE_OFFLINE`` forbids those downloads as well.
"""

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW_SIZE = (1280, 900)
# Generous, because a wait lasts this long only when the page is broken, while a loaded
# machine can make a working page slow.
WAIT_TIMEOUT_SECONDS = 30.0
PAGE_LOAD_TIMEOUT_SECONDS = 60.0
SCREENSHOTS_ENV = "TEMPER_UI_SCREENSHOTS"

T = TypeVar("T")

# Flags that keep the browser from contacting anything but the page's own server: no
# component updates, no background requests, no first-run or default-browser checks.
QUIET_FLAGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
)


def start_chromium(profile_dir: Path, download_dir: Path) -> WebDriver:
    """Start headless Chromium with a fresh profile in ``profile_dir``; downloads are saved
    to ``download_dir`` without a prompt.

    Chromium's sandbox cannot run as root, hence ``--no-sandbox``.
    """
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not binary.is_file():
            raise FileNotFoundError(
                f"{binary} is missing; install the Debian package {package} (scripts/setup.sh does)"
            )
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}",
        f"--user-data-dir={profile_dir}",
        *QUIET_FLAGS,
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(download_dir), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_SECONDS)
    driver.set_script_timeout(WAIT_TIMEOUT_SECONDS)
    return driver


def wait_until(
    driver: WebDriver,
    condition: Callable[[WebDriver], T],
    description: str,
    timeout_seconds: float = WAIT_TIMEOUT_SECONDS,
) -> T:
    """Wait until ``condition(driver)`` is truthy; fail naming ``description`` after the
    timeout. A missing element, or one a re-render replaced, counts as not yet."""
    wait = WebDriverWait(
        driver,
        timeout_seconds,
        poll_frequency=0.1,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )
    try:
        result: T = wait.until(condition)
    except TimeoutException as error:
        raise AssertionError(
            f"timed out after {timeout_seconds} s waiting for {description}"
        ) from error
    return result


def wait_for_text(
    driver: WebDriver,
    by: str,
    selector: str,
    description: str,
    matches: Callable[[str], bool] | None = None,
) -> str:
    """Wait until the element found by ``by`` and ``selector`` has a non-empty text that
    ``matches`` accepts (None: any), and return that text."""

    def matching_text(current: WebDriver) -> str:
        text: str = current.find_element(by, selector).text
        return text if matches is None or matches(text) else ""

    return wait_until(driver, matching_text, description)


class Screenshots:
    """Numbered screenshots in a directory, also copied to the directory named by
    TEMPER_UI_SCREENSHOTS when it is set."""

    def __init__(self, directory: Path, prefix: str) -> None:
        self.directory = directory
        self.prefix = prefix
        self.count = 0
        directory.mkdir(parents=True, exist_ok=True)
        extra = os.environ.get(SCREENSHOTS_ENV)
        self.extra = Path(extra) if extra else None
        if self.extra is not None:
            self.extra.mkdir(parents=True, exist_ok=True)

    def take(self, driver: WebDriver, name: str) -> Path:
        """Save the visible page as ``<prefix>-<n>-<name>.png``; return its path."""
        self.count += 1
        path = self.directory / f"{self.prefix}-{self.count:02d}-{name}.png"
        if not driver.save_screenshot(str(path)):
            raise AssertionError(f"Chromium did not save the screenshot {path}")
        if self.extra is not None:
            shutil.copy(path, self.extra / path.name)
        return path


def console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    """Return the browser console's SEVERE entries since the last call: script errors,
    Content-Security-Policy violations and failed connections. Responses with an HTTP error
    status are left out because Chromium logs each one, and the UI expects some: a 403 it
    shows, or the 404 of a plane without the hub."""
    entries: list[dict[str, Any]] = driver.get_log("browser")
    return [
        entry
        for entry in entries
        if entry["level"] == "SEVERE"
        and "the server responded with a status of" not in entry["message"]
    ]
