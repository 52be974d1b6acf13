"""The run report in a real browser (headless Chromium): what a person sees has no NaN, every chart loads,
and the winner sentence is there. The screenshot is kept under the test's tmp_path."""
from __future__ import annotations

import re

from mer.app.report import render
from tests.browser import chrome  # noqa: F401 (fixture)
from tests.test_report import DS, write_inputs


def test_report_in_a_browser(cfg, chrome, tmp_path):  # noqa: F811 (fixture)
    from selenium.webdriver.common.by import By

    write_inputs(cfg)
    path = render.run(cfg, DS)["report"]
    chrome.get(f"file://{path}")
    shot = tmp_path / "report.png"
    assert chrome.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    text = chrome.find_element(By.TAG_NAME, "body").text
    assert not re.search(r"\bnan\b", text, re.I), "NaN in the visible text"
    images = chrome.find_elements(By.TAG_NAME, "img")
    assert len(images) == 6
    for img in images:
        assert chrome.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0, \
            img.get_attribute("alt")
    winner = chrome.find_element(By.ID, "winner-sentence")
    assert winner.is_displayed()
    assert winner.text.startswith("Winner: dcm, HR@100 = 0.500 on the eval day (split eval, ds=2026-01-15")
