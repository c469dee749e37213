"""Headless Chromium for page tests: Debian's ``chromium`` and ``chromium-driver`` driven by Selenium.

Nothing is downloaded: the driver is given by path, so Selenium Manager never runs. A test module skips
itself with :func:`chromium_available`'s reason when any piece is missing::

    pytestmark = pytest.mark.skipif(chromium_available() is not None, reason=chromium_available() or "")

``CDNLAB_CHROMIUM`` and ``CDNLAB_CHROMEDRIVER`` override the two paths.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("CDNLAB_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CDNLAB_CHROMEDRIVER", "/usr/bin/chromedriver")
INSTALL_HINT = "apt-get install chromium chromium-driver; pip install selenium"


def chromium_available() -> str | None:
    """None when a page test can run here, else why not (for ``pytest.mark.skipif``)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return f"selenium is not installed ({INSTALL_HINT})"
    for path, what in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{what} is missing at {path} ({INSTALL_HINT})"
    return None


@contextmanager
def headless_chromium(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium WebDriver, quit on the way out whatever happened.

    The browser's console is kept (``driver.get_log("browser")``) so a test can check it for errors.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, js_condition: str, timeout: float, interval: float = 0.02) -> Any:
    """Poll the JavaScript expression ``js_condition`` until it is truthy; return its value.

    Raises ``TimeoutError`` after ``timeout`` seconds, naming the expression, its last value and the last
    exception it raised in the page (an expression that throws counts as not yet true).
    """
    from selenium.common.exceptions import JavascriptException

    deadline = time.monotonic() + timeout
    script = f"return ({js_condition});"
    last: Any = None
    error: JavascriptException | None = None
    while True:
        try:
            last = driver.execute_script(script)
            error = None
        except JavascriptException as exc:  # the page is not there yet
            error = exc
        if last:
            return last
        if time.monotonic() >= deadline:
            why = f"; it raised {str(error).splitlines()[0]}" if error else ""
            raise TimeoutError(f"not true within {timeout} s: {js_condition} (last value {last!r}{why})")
        time.sleep(interval)


def save_screenshot(driver: Any, path: str | os.PathLike[str]) -> Path:
    """A PNG of the browser's window at ``path`` (folders made as needed); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(p)):
        raise RuntimeError(f"the browser could not write a screenshot to {p}")
    return p
