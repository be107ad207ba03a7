"""`test-tube serve` end to end: Debian's headless chromium, driven by selenium, opens the page on 3 runs.

Needs ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (Debian's ``chromium`` and
``chromium-driver``; ``.ci/run`` installs them).  Selenium is given the driver's
path and ``SE_OFFLINE`` so it never tries to download a browser or driver.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import test_tube

from s3lib import S3Server
from storelib import upload_save_dir
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

    # the grid: a chart of acc over the two mnist runs (long has no acc): one smoothed and one raw line each
    wait(browser, lambda d: d.execute_script(
        "const c = state.cards.get('acc'); return c && c.plot && c.plot.series.length === 5 && c.plot.data[0].length > 0"))
    labels = browser.execute_script("return state.cards.get('acc').plot.series.map(s => s.label)")
    assert labels[1:] == ["mnist/version_0 raw", "mnist/version_0", "mnist/version_1 raw", "mnist/version_1"]
    assert browser.find_elements(By.CSS_SELECTOR, ".chart-card[data-metric='acc'] .uplot canvas")

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


@pytest.fixture(scope="module")
def bucket_server(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The same 3 runs copied into a bucket, in the layout a writer on object storage leaves; served by URI."""
    save_dir = build_three_runs(tmp_path_factory.mktemp("browser-s3") / "logs")
    s3_server.resume()
    bucket = s3_server.bucket(f"tt-browser-{uuid.uuid4().hex[:8]}")
    upload_save_dir(save_dir, s3_server.filesystem(), f"{bucket}/logs")
    running = Running(s3_server.uri(bucket, "logs"))  # type: ignore[arg-type]
    yield running
    running.stop()


def test_page_over_a_bucket_shows_the_runs_draws_a_chart_and_the_media(bucket_server: Running, browser: Any,
                                                                      tmp_path: Path) -> None:
    """test-tube serve s3://...: the same table, charts and images as over the local folder."""
    test_page_shows_the_runs_draws_a_chart_and_the_media(bucket_server, browser, tmp_path)


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

    browser.get_log("browser")  # drains what earlier tests left (a 404 they asked for on purpose)
    browser.get(per_rank_server.url)
    rows = wait(browser, lambda d: (r := d.find_elements(By.CSS_SELECTOR, "#runs tbody tr")) and len(r) == 3 and r)
    assert [r.get_attribute("data-run") for r in rows] == ["ddp/version_3/rank_0", "ddp/version_3/rank_1",
                                                           "plain/version_0"]
    header = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#runs thead th")]
    assert header[1:7] == ["name", "version", "rank", "status", "rows", "last step"]
    assert [r.find_elements(By.TAG_NAME, "td")[3].text for r in rows] == ["0", "1", ""]

    wait(browser, lambda d: d.execute_script(
        "const c = state.cards.get('loss'); return c && c.plot && c.plot.series.length === 7 && c.plot.data[0].length > 0"))
    labels = browser.execute_script("return state.cards.get('loss').plot.series.map(s => s.label)")
    assert labels[1:] == ["ddp v3 r0 raw", "ddp v3 r0", "ddp v3 r1 raw", "ddp v3 r1",
                          "plain/version_0 raw", "plain/version_0"]

    browser.find_element(By.CSS_SELECTOR, "#runs tbody tr[data-run='ddp/version_3/rank_1'] a").click()
    image = wait(browser, lambda d: (i := d.find_elements(By.CSS_SELECTOR, "#media img")) and
                 d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i[0]) == 4 and i[0])
    assert image.get_attribute("alt") == "sample_png at step 4"
    assert "ddp/version_3/rank_1" in browser.find_element(By.ID, "run-title").text
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


# -- the grid, the hyperparameter view, the comparison -----------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
# Set to a folder (the README's: docs) to write the README's screenshots there: TEST_TUBE_SCREENSHOTS=docs
SCREENSHOTS = os.environ.get("TEST_TUBE_SCREENSHOTS")


def screenshot(browser: Any, tmp_path: Path, name: str) -> None:
    """Save a screenshot as ``name`` in TEST_TUBE_SCREENSHOTS (or tmp_path) and check it is a real PNG."""
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / name
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def readme_block(section: str) -> str:
    """The first ```python block after the README heading ``section``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split(section, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def run_script(code: str, cwd: Path) -> None:
    script = cwd / "script.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr


def open_page(browser: Any, running: Running) -> None:
    from selenium.webdriver.common.by import By

    browser.get_log("browser")  # drains what earlier tests left
    browser.get(running.url)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#runs tbody tr"))


def no_page_errors(browser: Any) -> None:
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The two runs examples/demo.py writes, run as the README says (in a fresh folder)."""
    cwd = tmp_path_factory.mktemp("demo")
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py")], cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    running = Running(cwd / "test_tube_logs")
    yield running
    running.stop()


def card_order(browser: Any) -> list[str]:
    return browser.execute_script("return [...document.querySelectorAll('.chart-card')].map(c => c.dataset.metric)")


def test_the_demo_opens_on_a_chart_of_every_metric(demo_server: Running, browser: Any, tmp_path: Path) -> None:
    """The demo's first screen: one chart per metric in first-logged order, the losses on log y (the README's screenshot)."""
    open_page(browser, demo_server)
    wait(browser, lambda d: d.execute_script(
        "return state.cards.size === 5 && [...state.cards.values()].every(c => c.plot && c.plot.data[0].length)"))
    assert card_order(browser) == ["train_loss", "w", "epoch", "val_loss", "val_acc"]
    logy = browser.execute_script("return Object.fromEntries([...state.cards].map(([m, c]) => [m, c.plot.scales.y.distr]))")
    # train_loss falls from about 10 to 0.004 and val_loss likewise (over 3 decades): log; val_acc and epoch start at 0
    assert logy == {"train_loss": 3, "w": 1, "epoch": 1, "val_loss": 3, "val_acc": 1}
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot(browser, tmp_path, "serve.png")
    no_page_errors(browser)


def build_grouped(save_dir: Path) -> Path:
    """Two runs logging train/loss (10 -> 0.001), train/lr, epoch, val/loss and val/acc; the second also train/grad."""
    for run in range(2):
        with test_tube.Experiment(name="grouped", save_dir=save_dir, record_git=False) as exp:
            exp.tag({"lr": 0.1 * (run + 1), "optimizer": "adam"})
            for step in range(200):
                row = {"train/loss": 10.0 * 10 ** (-4 * step / 199), "train/lr": 0.1 - step / 4000, "epoch": step // 50}
                if run == 1 and step >= 100:
                    row["train/grad"] = 1.0 + step % 3
                exp.log(row, step=step)
                if step % 50 == 49:
                    exp.log({"val/loss": 5.0 / (step + 1), "val/acc": step / 200}, step=step)
    return save_dir


@pytest.fixture(scope="module")
def grouped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = Running(build_grouped(tmp_path_factory.mktemp("grouped") / "logs"))
    yield running
    running.stop()


def test_the_grid_groups_metrics_by_prefix_and_applies_the_log_y_rule(grouped_server: Running, browser: Any) -> None:
    """Groups train/, (none), val/ in first-logged order; log y only for a metric above 0 spanning 1,000x or more."""
    from selenium.webdriver.common.by import By

    open_page(browser, grouped_server)
    wait(browser, lambda d: d.execute_script(
        "return state.cards.size === 6 && [...state.cards.values()].every(c => c.plot && c.plot.data[0].length)"))
    groups = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#grid h3.group")]
    assert groups == ["train/", "(no group)", "val/"]
    assert card_order(browser) == ["train/loss", "train/lr", "train/grad", "epoch", "val/loss", "val/acc"]
    logy = browser.execute_script("return Object.fromEntries([...state.cards].map(([m, c]) => [m, c.plot.scales.y.distr]))")
    # train/loss spans 4 decades; val/loss 5/50..5/200 spans 4x; train/lr 2x; epoch and val/acc reach 0
    assert logy == {"train/loss": 3, "train/lr": 1, "train/grad": 1, "epoch": 1, "val/loss": 1, "val/acc": 1}
    # each chart holds every ticked run that has the metric: two lines (raw and smoothed) per run
    lines = browser.execute_script("return Object.fromEntries([...state.cards].map(([m, c]) => [m, c.plot.series.length - 1]))")
    assert lines == {"train/loss": 4, "train/lr": 4, "train/grad": 2, "epoch": 4, "val/loss": 4, "val/acc": 4}

    # the rule is a starting point: the box turns log y off, and on for another chart
    browser.find_element(By.CSS_SELECTOR, ".chart-card[data-metric='train/loss'] input.logy").click()
    wait(browser, lambda d: d.execute_script("return state.cards.get('train/loss').plot.scales.y.distr === 1"))
    browser.find_element(By.CSS_SELECTOR, ".chart-card[data-metric='train/lr'] input.logy").click()
    wait(browser, lambda d: d.execute_script("return state.cards.get('train/lr').plot.scales.y.distr === 3"))

    # enlarging a chart makes it full width and tall, with a legend; clicking again makes it small
    small = browser.execute_script("return state.cards.get('val/acc').plot.width")
    browser.find_element(By.CSS_SELECTOR, ".chart-card[data-metric='val/acc'] button.enlarge").click()
    wait(browser, lambda d: d.execute_script(
        "const p = state.cards.get('val/acc').plot; return p.height === BIG_HEIGHT && p.width > arguments[0] * 2", small))
    assert "big" in browser.find_element(By.CSS_SELECTOR, ".chart-card[data-metric='val/acc']").get_attribute("class")
    browser.find_element(By.CSS_SELECTOR, ".chart-card[data-metric='val/acc'] button.enlarge").click()
    wait(browser, lambda d: d.execute_script("return state.cards.get('val/acc').plot.height === SMALL_HEIGHT"))

    # zooming one chart zooms them all, to the same x range
    browser.execute_script("state.cards.get('train/loss').plot.setScale('x', {min: 20, max: 60})")
    wait(browser, lambda d: d.execute_script(
        "return JSON.stringify(state.zoom) === '[20,60]' && [...state.cards.values()].every("
        "c => c.plot.scales.x.min === 20 && c.plot.scales.x.max === 60)"))
    browser.find_element(By.ID, "zoom-out").click()
    wait(browser, lambda d: d.execute_script("return state.zoom === null && state.cards.get('epoch').plot.scales.x.max >= 199"))
    no_page_errors(browser)


@pytest.fixture(scope="module")
def search_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The 6 runs of the README's search.py (HyperOptArgumentParser, random search, seed 0), run as written."""
    cwd = tmp_path_factory.mktemp("search")
    run_script(readme_block("## Hyperparameter search"), cwd)
    running = Running(cwd / "test_tube_logs")
    yield running
    running.stop()


def axes(browser: Any) -> list[tuple[str, str]]:
    """The parallel-coordinates axes, left to right: (key, scale)."""
    return [tuple(a) for a in browser.execute_script(
        "return [...document.querySelectorAll('#parallel g.axis')].map(g => [g.dataset.axis, g.dataset.scale])")]


def drag_axis_around(browser: Any, axis: str, label: str) -> None:
    """Drag along an axis, with the mouse, from a little above its tick ``label`` to a little below it."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    area = browser.find_element(By.CSS_SELECTOR, f"#parallel g.axis[data-axis='{axis}'] rect.brush-area")
    offset = browser.execute_script(
        "const g = arguments[0].parentNode; const area = arguments[0].getBoundingClientRect();"
        "const ticks = [...g.querySelectorAll('text.tick-label')].filter(t => t.textContent === arguments[1]);"
        "if (ticks.length !== 1) return null;"
        "const line = ticks[0].previousSibling.getBoundingClientRect();"
        "return line.top + line.height / 2 - (area.top + area.height / 2);", area, label)
    assert offset is not None, f"no tick {label} on {axis}"
    ActionChains(browser).move_to_element_with_offset(area, 0, int(offset) - 8).click_and_hold() \
        .move_by_offset(0, 16).release().perform()


def test_a_search_in_the_hyperparameter_view_and_brushing_an_axis(search_server: Running, browser: Any,
                                                                  tmp_path: Path) -> None:
    """Axes for layers, learning_rate (log) and loss; brushing layers around one value ticks exactly those runs."""
    from selenium.webdriver.common.by import By

    open_page(browser, search_server)
    table = test_tube.runs(Path(search_server.server.app.save_dir)).to_pylist()
    assert len(table) == 6
    browser.find_element(By.CSS_SELECTOR, "#views [data-view='hparams']").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#parallel path[data-run]")) == 6)
    # the search's tunable arguments, as argparse tagged them, with no set-up: two tag axes and the metric
    assert axes(browser) == [("tag:layers", "linear"), ("tag:learning_rate", "log"), ("metric", "linear")]
    assert browser.find_element(By.ID, "hp-metric").get_attribute("value") == "loss"
    header = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#hp-table thead th")]
    assert header == ["run", "layers", "learning_rate", "loss.last"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#scatter circle[data-run]")) == 6
    browser.execute_script("window.scrollTo(0, document.getElementById('views').offsetTop - 10)")
    screenshot(browser, tmp_path, "serve_hparams.png")

    by_layers: dict[int, list[str]] = {}
    for run in table:
        by_layers.setdefault(run["layers"], []).append(f"search_demo/version_{run['version']}")
    value, wanted = max(by_layers.items(), key=lambda item: len(item[1]))
    assert 0 < len(wanted) < 6
    drag_axis_around(browser, "tag:layers", str(value))
    wait(browser, lambda d: d.execute_script("return state.hp.brushes.size === 1"))
    ticked = sorted(browser.execute_script("return [...state.selected]"))
    assert ticked == sorted(wanted)
    boxes = {tr.get_attribute("data-run"): tr.find_element(By.CSS_SELECTOR, "input").is_selected()
             for tr in browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")}
    assert sorted(run for run, on in boxes.items() if on) == sorted(wanted)
    # the other runs stay drawn, grey, so the brush can be moved; the grid draws only the ticked ones
    assert len(browser.find_elements(By.CSS_SELECTOR, "#parallel path.off")) == 6 - len(wanted)
    wait(browser, lambda d: d.execute_script("return state.cards.get('loss').plot.series.length") == 1 + 2 * len(wanted))
    # clearing the brushes ticks the six again
    browser.find_element(By.ID, "hp-clear").click()
    wait(browser, lambda d: d.execute_script("return state.selected.size === 6 && state.hp.brushes.size === 0"))
    no_page_errors(browser)


def build_tagged_trials(save_dir: Path) -> Path:
    """Three runs tagged from argparse Namespaces as a SlurmCluster trial tags them (hpc_exp_number = the trial)."""
    import argparse

    for i, lr in enumerate((0.1, 0.01, 0.001)):
        with test_tube.Experiment(name="trials", save_dir=save_dir, record_git=False) as exp:
            exp.argparse(argparse.Namespace(learning_rate=lr, optimizer="adam", hpc_exp_number=i))
            for step in range(20):
                exp.log({"loss": lr * 100 / (step + 1)})
    return save_dir


@pytest.fixture(scope="module")
def trials_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = Running(build_tagged_trials(tmp_path_factory.mktemp("trials") / "logs"))
    yield running
    running.stop()


def test_compare_marks_the_differing_tags_and_a_trial_number_is_no_axis(trials_server: Running, browser: Any) -> None:
    """Compare: learning_rate and hpc_exp_number marked as differing, optimizer not; git and metrics shown."""
    from selenium.webdriver.common.by import By

    open_page(browser, trials_server)
    browser.find_element(By.CSS_SELECTOR, "#views [data-view='compare']").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#compare tr[data-key='tag:learning_rate']"))
    heads = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#compare thead th[data-run]")]
    assert heads == ["trials/version_0", "trials/version_1", "trials/version_2"]
    marked = {tr.get_attribute("data-key"): "differs" in tr.get_attribute("class")
              for tr in browser.find_elements(By.CSS_SELECTOR, "#compare tr[data-key^='tag:']")}
    assert marked == {"tag:learning_rate": True, "tag:optimizer": False, "tag:hpc_exp_number": True}
    lr_row = browser.find_element(By.CSS_SELECTOR, "#compare tr[data-key='tag:learning_rate']")
    assert [td.text for td in lr_row.find_elements(By.TAG_NAME, "td")] == ["0.1", "0.01", "0.001"]
    assert browser.find_elements(By.CSS_SELECTOR, "#compare tr[data-key^='git:']")  # record_git=False: "no"
    assert browser.find_elements(By.CSS_SELECTOR, "#compare tr[data-key='metric:loss']")
    # the charts of the compared runs, overlaid, below
    wait(browser, lambda d: d.execute_script("const c = state.cards.get('loss'); return c && c.plot && c.plot.series.length === 7"))

    # unticking down to one run: nothing to compare
    browser.find_element(By.CSS_SELECTOR, "#runs tbody tr[data-run='trials/version_1'] input").click()
    browser.find_element(By.CSS_SELECTOR, "#runs tbody tr[data-run='trials/version_2'] input").click()
    wait(browser, lambda d: "two or more" in d.find_element(By.ID, "compare-note").text)

    # the hyperparameter view: the trial number is a column, not an axis; learning_rate spans 100x, log for a
    # tag (10x or more), and loss.last 100x too, linear for a metric (log from 1,000x)
    browser.find_element(By.ID, "select-all").click()
    browser.find_element(By.CSS_SELECTOR, "#views [data-view='hparams']").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#parallel path[data-run]")) == 3)
    assert axes(browser) == [("tag:learning_rate", "log"), ("metric", "linear")]
    header = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#hp-table thead th")]
    assert header == ["run", "learning_rate", "hpc_exp_number", "loss.last"]
    assert browser.find_element(By.CSS_SELECTOR, "#hp-table caption summary").text == "1 tag the same in every run"
    no_page_errors(browser)
