"""The search page in a real browser: headless Chromium (Debian's chromium + chromium-driver) against a real
uvicorn server on loopback. Skipped, with the reason, where Chromium is not installed."""
from __future__ import annotations

import shutil

import pytest

from lsr.eval.bench.loadtest import running_server

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


def test_search_page_in_chromium(browser, api_index_dir, tmp_path):
    with running_server(api_index_dir) as (port, _):
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 60)
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "100 documents"))

        box = browser.find_element(By.ID, "q")
        box.send_keys("microRNA expression in cancer cells")
        Select(browser.find_element(By.ID, "mode")).select_by_value("hybrid")
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".hit")) == 10)
        titles = [h.text for h in browser.find_elements(By.CSS_SELECTOR, ".hit h3")]
        assert titles[0].startswith("1. ") and all(len(t) > 3 for t in titles)
        assert "hits in" in browser.find_element(By.ID, "status").text
        browser.save_screenshot(str(tmp_path / "search.png"))

        box.clear()
        box.send_keys("   ")  # passes the browser's `required`, refused by the API: the page says why
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda d: "error" in d.find_element(By.ID, "status").get_attribute("class"))
        assert "query" in browser.find_element(By.ID, "status").text.lower()
        assert browser.find_elements(By.CSS_SELECTOR, ".hit") == []
