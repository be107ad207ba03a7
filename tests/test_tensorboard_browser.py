"""`tensorboard --logdir` on our files, in Debian's headless chromium: the runs and their loss charts.

Needs ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (``.ci/run`` installs them) and the
``tensorboard`` package (the test extra).  docs/tensorboard.png in the README is this page.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import test_tube
from test_serve_browser import CHROMEDRIVER, CHROMIUM, WAIT, wait
from test_tensorboard import _free_port, _get

pytest.importorskip("tensorboard")
pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER})",
)


def test_tensorboard_page_shows_both_runs_and_their_loss_cards(tmp_path: Path) -> None:
    """The Time Series tab, filtered to 'loss': runs demo/version_0/tf and demo/version_1/tf, cards train_loss and val_loss."""
    root = tmp_path / "logs"
    for lr in (0.1, 0.01):
        with test_tube.Experiment(save_dir=root, name="demo", record_git=False) as exp:
            exp.tag({"learning_rate": lr, "optimizer": "adam"})
            for step in range(300):
                exp.log({"train_loss": math.exp(-step * lr / 3), "lr": lr})
                if step % 50 == 49:
                    exp.log({"val_loss": 1.1 * math.exp(-step * lr / 3)})
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(root),
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--window-size=1400,760"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        base = f"http://127.0.0.1:{port}"

        def runs_loaded(_: object) -> bool:
            try:
                return len(_get(f"{base}/data/runs")) == 2
            except OSError:
                return False

        wait(driver, runs_loaded)
        driver.get(f"{base}/?tagFilter=loss#timeseries")
        page = wait(driver, lambda d: "val_loss" in d.find_element(By.TAG_NAME, "body").text
                    and "demo/version_1/tf" in d.find_element(By.TAG_NAME, "body").text and d)
        text = page.find_element(By.TAG_NAME, "body").text
        assert "demo/version_0/tf" in text and "train_loss" in text
        shot = tmp_path / "tensorboard.png"
        assert driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)
