"""The dashboard in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``),
served by the real ``greenagents dashboard`` command: pages, numbers, a live run, filters, a
call, an export and markup in the log. Screenshots land in ``test-artifacts/dashboard/``.

Without Chromium these tests skip, unless ``GREENAGENTS_REQUIRE_BROWSER=1`` (set by ``.ci/run``)
makes that a failure: nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from greenagents.testing import Simulator

from .dashboard_logs import XSS, calls, real_log

try:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:
    if os.environ.get("GREENAGENTS_REQUIRE_BROWSER"):
        raise  # CI installs the test extra, selenium included
    pytest.skip("the browser tests need selenium (the test extra)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("GREENAGENTS_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "dashboard"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--window-size=1440,1100")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        message = "the browser tests need Debian's chromium and chromium-driver packages"
        if os.environ.get("GREENAGENTS_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    session = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))
    session.set_page_load_timeout(30)
    try:
        yield session
    finally:
        session.quit()


@contextlib.contextmanager
def dashboard(db: Path, *options: str) -> Iterator[str]:
    """``greenagents dashboard`` on a free port, in a child process; yields the URL it prints."""
    proc = subprocess.Popen([sys.executable, "-m", "greenagents", "dashboard", "--db", str(db),
                             "--port", "0", *options], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"(http://\S+)/(\S*)", line)
        assert url, (line, proc.stderr.read() if proc.poll() is not None else "")
        yield url.group(1) + ("/" + url.group(2) if url.group(2) else "")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_for(condition: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def follow(browser: Any, by: str, what: str) -> None:
    """Click a link or a form's button and wait until the next page has replaced this one.

    The click returns before the navigation ends: reading the page right after it can read the old
    page's rows, or elements of it that go stale in the middle of the read.
    """
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(by, what).click()
    WebDriverWait(browser, 30).until(staleness_of(old))
    WebDriverWait(browser, 30).until(
        lambda b: b.execute_script("return document.readyState") == "complete")


def logged(db: Path) -> int:
    """Calls in ``db`` so far; 0 while the writer has not created it (or its table) yet."""
    try:
        return len(calls(db)) if db.exists() else 0
    except sqlite3.OperationalError:
        return 0


def number(browser: Any, css: str) -> int:
    """The number at the start of an element's text, read in one script: a live page replaces its
    elements every refresh, so a found element can go stale before its text is read."""
    text = browser.execute_script("return document.querySelector(arguments[0]).innerText", css)
    return int(text.replace(",", "").split()[0])


@pytest.fixture
def log(tmp_path: Path, sim_factory: Any) -> Path:
    sim: Simulator = sim_factory(faults={"server_error": 0.3}, seed=7)
    db = tmp_path / "runs.db"
    real_log(db, sim.base_url)
    return db


def test_each_page_loads_with_the_numbers_of_the_log(browser: Any, log: Path) -> None:
    rows = calls(log)
    run = rows[0]["run_id"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with dashboard(log) as url:
        browser.get(url)
        row = f'tr[data-run="{run}"]'
        assert number(browser, f"{row} td.calls") == len(rows)
        assert number(browser, f"{row} td.ok") == sum(r["status"] == "ok" for r in rows)
        assert number(browser, f"{row} td.failed") == sum(r["status"] != "ok" for r in rows)
        tokens = sum((r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0) for r in rows)
        assert number(browser, f"{row} td.tokens") == tokens
        browser.save_screenshot(str(ARTIFACTS / "overview.png"))
        follow(browser, By.LINK_TEXT, run)
        assert number(browser, "#kpi-calls") == len(rows)
        assert number(browser, "#kpi-tokens") == tokens
        cost = sum(r["cost_usd"] or 0 for r in rows)
        assert browser.find_element(By.ID, "kpi-cost").text == f"${cost:.6f}"  # < $1: 6 places
        assert len(browser.find_elements(By.CSS_SELECTOR, ".chart > svg")) == 5
        browser.save_screenshot(str(ARTIFACTS / "run.png"))
        follow(browser, By.LINK_TEXT, "all calls")
        assert len(browser.find_elements(By.CSS_SELECTOR, "table.calls tbody tr")) == 50
        follow(browser, By.ID, "older")
        assert len(browser.find_elements(By.CSS_SELECTOR, "table.calls tbody tr")) == len(rows) - 50


def test_a_live_run_advances_without_reloading(browser: Any, tmp_path: Path,
                                               sim_factory: Any) -> None:
    sim: Simulator = sim_factory(latency=0.25)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": f"review {n}"}) + "\n"
                                               for n in range(120)))
    run = subprocess.Popen([sys.executable, "-m", "greenagents", "run", "tests.agents:SentimentAgent",
                            "--input", str(tmp_path / "in.jsonl"), "--output",
                            str(tmp_path / "out.jsonl"), "--concurrency", "3"], cwd=ROOT,
                           env={**os.environ, "OPENAI_BASE_URL": sim.base_url},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = tmp_path / ".greenagents" / "runs.db"
    try:
        wait_for(lambda: logged(db), what="the run's first logged calls")
        with dashboard(db) as url:
            browser.get(url)
            browser.execute_script("window.__sameDocument = true")
            first = number(browser, "td.calls")
            assert browser.find_element(By.CSS_SELECTOR, "span.state").text == "running"
            wait_for(lambda: number(browser, "td.calls") > first + 5, what="the count to grow")
            follow(browser, By.CSS_SELECTOR, "td a")
            browser.execute_script("window.__sameDocument = true")
            seen = number(browser, "#kpi-calls")
            wait_for(lambda: number(browser, "#kpi-calls") > seen, what="the run page to grow")
            assert browser.execute_script("return window.__sameDocument") is True  # no reload
            assert run.wait(timeout=120) == 0
            wait_for(lambda: number(browser, "#kpi-calls") == 120, what="the last calls")
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def test_filter_open_a_call_and_export(browser: Any, log: Path) -> None:
    failed = calls(log, "status = 'error' ORDER BY id DESC")
    with dashboard(log) as url:
        browser.get(f"{url}/calls")
        Select(browser.find_element(By.ID, "f-status")).select_by_value("error")
        follow(browser, By.ID, "f-apply")
        statuses = [cell.text for cell in browser.find_elements(
            By.CSS_SELECTOR, "table.calls tbody td:nth-child(6)")]
        assert statuses == ["error"] * len(failed)
        Select(browser.find_element(By.ID, "f-error")).select_by_visible_text("InputError")
        follow(browser, By.ID, "f-apply")
        (link,) = browser.find_elements(By.CSS_SELECTOR, "table.calls tbody td:first-child a")
        follow(browser, By.LINK_TEXT, link.text)
        assert "InputError" in browser.find_element(By.ID, "error").text
        assert json.loads(browser.find_element(By.ID, "inputs").text) == {"text": 42}
        browser.back()
        browser.find_element(By.ID, "f-q").send_keys("kettle")
        Select(browser.find_element(By.ID, "f-error")).select_by_index(0)
        follow(browser, By.ID, "f-apply")
        href = browser.find_element(By.ID, "export-json").get_attribute("href")
        exported = browser.execute_async_script(
            "fetch(arguments[0]).then(r => r.json()).then(arguments[1])", href)
    expected = [r["id"] for r in failed if r["inputs"] and "kettle" in r["inputs"]]
    assert [row["id"] for row in exported] == expected


def test_markup_in_the_log_never_runs(browser: Any, log: Path) -> None:
    (bad,) = calls(log, "error_class = 'ValueError'")
    with dashboard(log) as url:
        for page in (url, f"{url}/runs/{bad['run_id']}", f"{url}/calls", f"{url}/calls/{bad['id']}"):
            browser.get(page)
            assert browser.execute_script("return window.__pwned") is None, page
            assert not browser.find_elements(By.CSS_SELECTOR, "main script, main img"), page
        assert json.loads(browser.find_element(By.ID, "inputs").text) == {"text": XSS}
        assert XSS in browser.find_element(By.ID, "error").text


def test_on_a_public_host_the_token_opens_every_page(browser: Any, log: Path) -> None:
    with dashboard(log, "--host", "0.0.0.0", "--token", "s3cret") as printed:
        assert printed.endswith("/?token=s3cret")
        base = printed.split("/?")[0].replace("0.0.0.0", "127.0.0.1")
        browser.delete_all_cookies()
        browser.get(base + "/calls")
        assert "token is required" in browser.find_element(By.TAG_NAME, "body").text
        browser.get(base + "/?token=s3cret")
        follow(browser, By.CSS_SELECTOR, "tbody td a")  # no token in this link
        assert number(browser, "#kpi-calls") == len(calls(log))
        browser.execute_script("window.__sameDocument = true")
        time.sleep(2.5)  # one live refresh, sent with the cookie
        assert browser.execute_script("return window.__sameDocument") is True
        assert number(browser, "#kpi-calls") == len(calls(log))
