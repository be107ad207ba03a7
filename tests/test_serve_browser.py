"""`test-tube serve` end to end: Debian's headless chromium, driven by selenium, opens the page on 3 runs.

Needs ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (Debian's ``chromium`` and
``chromium-driver``; ``.ci/run`` installs them).  Selenium is given the driver's
path and ``SE_OFFLINE`` so it never tries to download a browser or driver.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from test_runs import build_per_rank
from test_serve import Running, build_three_runs

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 30  # seconds, for any one thing the page does

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
           "apt-get install chromium chromium-driver (.ci/run does)",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = Running(build_three_runs(tmp_path_factory.mktemp("browser") / "logs"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not fetch anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()


def wait(driver: Any, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition)


def test_page_shows_the_runs_draws_a_chart_and_the_media(server: Running, browser: Any, tmp_path: Path) -> None:
    """3 rows in the table; selecting a metric draws one line per run; a run's image and a screenshot."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(server.url)
    rows = wait(browser, lambda d: (r := d.find_elements(By.CSS_SELECTOR, "#runs tbody tr")) and len(r) == 3 and r)
    assert [r.get_attribute("data-run") for r in rows] == ["long/version_0", "mnist/version_0", "mnist/version_1"]
    header = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#runs thead th")]
    assert header[1:6] == ["name", "version", "status", "rows", "last step"]
    assert "lr" in header and "optimizer" in header and "loss.last" in header and "acc.max" in header

    # the filter keeps the matching rows
    browser.find_element(By.ID, "filter").send_keys("optimizer=adam")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#runs tbody tr")) == 2)
    browser.find_element(By.ID, "filter").clear()
    browser.execute_script("document.getElementById('filter').dispatchEvent(new Event('input'))")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#runs tbody tr")) == 3)

    # a chart of acc over the two mnist runs (long has no acc): one smoothed and one raw line each
    Select(browser.find_element(By.ID, "metric")).select_by_value("acc")
    wait(browser, lambda d: d.execute_script(
        "const c = state.chart; return c && c.series.length === 5 && c.data.length === 5 && c.data[0].length > 0"))
    labels = browser.execute_script("return state.chart.series.map(s => s.label)")
    assert labels[1:] == ["mnist/version_0 raw", "mnist/version_0", "mnist/version_1 raw", "mnist/version_1"]
    assert browser.find_elements(By.CSS_SELECTOR, "#chart .uplot canvas")

    # sorting by a column reorders the rows
    browser.find_element(By.CSS_SELECTOR, "#runs thead th[data-key='tag:lr']").click()
    wait(browser, lambda d: [r.get_attribute("data-run") for r in d.find_elements(By.CSS_SELECTOR, "#runs tbody tr")]
         == ["mnist/version_1", "mnist/version_0", "long/version_0"])

    # one run's details: its tags and its image at the last step, then the first step with the slider
    browser.find_element(By.CSS_SELECTOR, "#runs tbody tr[data-run='mnist/version_0'] a").click()
    image = wait(browser, lambda d: (i := d.find_elements(By.CSS_SELECTOR, "#media img")) and
                 d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i[0]) == 8 and i[0])
    assert image.get_attribute("alt") == "sample_png at step 20"
    browser.execute_script("const s = document.querySelector('#media input[type=range]');"
                           "s.value = 0; s.dispatchEvent(new Event('input'))")
    assert image.get_attribute("alt") == "sample_png at step 0"
    assert "adam" in browser.find_element(By.ID, "run-tags").text

    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    # nothing went wrong in the page (a favicon miss would show here too)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_a_missing_run_in_the_page_shows_a_message_not_a_traceback(server: Running, browser: Any) -> None:
    """The page's data endpoints answer a missing run with a message the page shows."""
    from selenium.webdriver.common.by import By

    browser.get(server.url + "api/run?name=mnist&version=9")
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "no run mnist/version_9" in text and "Traceback" not in text



@pytest.fixture(scope="module")
def per_rank_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = Running(build_per_rank(tmp_path_factory.mktemp("browser_per_rank") / "logs"))
    yield running
    running.stop()


def test_page_shows_and_charts_each_rank_of_a_per_rank_run(per_rank_server: Running, browser: Any) -> None:
    """One row per rank with a rank column; the chart draws each rank, labelled "ddp v3 r1"; a rank's image shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get_log("browser")  # drains what earlier tests left (a 404 they asked for on purpose)
    browser.get(per_rank_server.url)
    rows = wait(browser, lambda d: (r := d.find_elements(By.CSS_SELECTOR, "#runs tbody tr")) and len(r) == 3 and r)
    assert [r.get_attribute("data-run") for r in rows] == ["ddp/version_3/rank_0", "ddp/version_3/rank_1",
                                                           "plain/version_0"]
    header = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#runs thead th")]
    assert header[1:7] == ["name", "version", "rank", "status", "rows", "last step"]
    assert [r.find_elements(By.TAG_NAME, "td")[3].text for r in rows] == ["0", "1", ""]

    Select(browser.find_element(By.ID, "metric")).select_by_value("loss")
    wait(browser, lambda d: d.execute_script(
        "const c = state.chart; return c && c.series.length === 7 && c.data[0].length > 0"))
    labels = browser.execute_script("return state.chart.series.map(s => s.label)")
    assert labels[1:] == ["ddp v3 r0 raw", "ddp v3 r0", "ddp v3 r1 raw", "ddp v3 r1",
                          "plain/version_0 raw", "plain/version_0"]

    browser.find_element(By.CSS_SELECTOR, "#runs tbody tr[data-run='ddp/version_3/rank_1'] a").click()
    image = wait(browser, lambda d: (i := d.find_elements(By.CSS_SELECTOR, "#media img")) and
                 d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i[0]) == 4 and i[0])
    assert image.get_attribute("alt") == "sample_png at step 4"
    assert "ddp/version_3/rank_1" in browser.find_element(By.ID, "run-title").text
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
