"""The real Airflow 3 UI over the real dags/ folder, driven by headless Chromium.

``scripts/airflow_ui.sh`` (= ``make ui``: a local S3 endpoint, then ``airflow standalone``: scheduler,
dag-processor, triggerer, api-server; LocalExecutor, SQLite) starts with no venv on PATH, as from a fresh
clone, in a fresh AIRFLOW_HOME on free ports, with a data root that holds no raw input. ``wait_for_raw``
is given no time to wait (``MER_DAG__RAW_WAIT_TIMEOUT_S=0``), so every run fails fast at the sensor with
its own message and the rest of the DAG is never started: the UI, the task logs and a backfill are
exercised without running the pipeline. Checks: the DAG list shows mer_daily;
a task's log pane shows what the task logged; a backfill created in the Trigger -> Backfill dialog
completes.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from mer.base.config import REPO_ROOT
from tests.browser import CHROMEDRIVER, CHROMIUM, chrome  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

DAG_ID = "mer_daily"
VENV_BIN = Path(sys.executable).parent  # not resolved: the venv's bin, where `airflow` is
SCRIPT = REPO_ROOT / "scripts" / "airflow_ui.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


class Airflow:
    """``make ui``'s script in its own process group, and a small REST client (no auth: all admins)."""

    def __init__(self, tmp: Path):
        self.home = tmp / "airflow_home"
        self.home.mkdir()
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MER_", "VIRTUAL_ENV"))}
        self.env = {
            **env,
            # no activated venv: the script must find `airflow` itself (standalone spawns bare `airflow ...`)
            "PATH": os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                    if p and Path(p).resolve() != VENV_BIN.resolve()),
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",  # LocalExecutor workers (default 32) on a small machine
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            # workers reach the Execution API here; the default is localhost:8080 whatever the API port
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "MER_ROOT": str(tmp / "var"),  # no raw input there
            "MER_DAG__RAW_WAIT_TIMEOUT_S": "0",
            "MER_LOCAL_S3_PORT": str(_free_port()),
        }
        self.log_path = self.home / "standalone.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 240) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(["bash", str(SCRIPT)], env=self.env, cwd=REPO_ROOT,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait(lambda: self._dag_loaded(), timeout, f"the api-server serving {DAG_ID}")

    def _dag_loaded(self) -> bool:
        assert self.proc.poll() is None, f"{SCRIPT.name} exited\n{self.tail()}"
        try:
            return self.get(f"/api/v2/dags/{DAG_ID}").get("dag_id") == DAG_ID
        except (OSError, AssertionError):
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            pgid = os.getpgid(self.proc.pid)
            os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
            try:  # stragglers of the group (executor workers, serve-logs)
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace") if self.log_path.exists() else ""

    def request(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path} -> {e.code}: {e.read()[:500]!r}") from None

    def get(self, path: str) -> dict:
        return self.request("GET", path)

    def wait(self, pred, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = pred()
            if value:
                return value
            time.sleep(1)
        raise TimeoutError(f"{what}: not within {timeout:g}s\n{self.tail()}")

    def finished_run(self, run_id: str, timeout: float = 240) -> dict:
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{q(run_id)}"
        return self.wait(lambda: (r := self.get(path))["state"] in ("success", "failed") and r, timeout, f"run {run_id} finished")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:  # before paying for an Airflow start
        pytest.skip(f"no headless browser: {', '.join(missing)} missing (apt-get install -y chromium chromium-driver)")
    af = Airflow(tmp_path_factory.mktemp("airflow_ui"))
    try:
        af.start()
        yield af
    finally:
        af.stop()


def wait_css(drv, css: str, timeout: float = 60):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout).until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))


def open_menu(drv, button_css: str, item_css: str, tries: int = 6):
    """Click a menu button until the item shows. A click that lands while the page is still rendering (a loaded
    machine: the fresh-clone CI, session 20) opens nothing, and waiting for the item after it only times out."""
    from selenium.common.exceptions import TimeoutException

    for _ in range(tries):
        wait_css(drv, button_css).click()
        try:
            return wait_css(drv, item_css, timeout=10)
        except TimeoutException:
            continue
    raise AssertionError(f"{item_css} did not show after {tries} clicks on {button_css}")


def type_into(drv, css: str, text: str, timeout: float = 30):
    """Type into an input once it takes keys. A popover's input is in the DOM, visible, while the popover still
    opens, and typing then fails with "element not interactable" (the fresh-clone CI, session 20)."""
    from selenium.common.exceptions import ElementNotInteractableException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def typed(d):
        d.find_element(By.CSS_SELECTOR, css).send_keys(text)
        return True

    # the wait's own retry: "not interactable" (and "no such element", ignored by default) mean try again
    WebDriverWait(drv, timeout, ignored_exceptions=[ElementNotInteractableException]).until(typed)


def wait_text(drv, text: str, timeout: float = 60):
    """The innermost visible element whose text contains ``text``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    xp = f'//*[contains(normalize-space(.), "{text}") and not(.//*[contains(normalize-space(.), "{text}")])]'
    return WebDriverWait(drv, timeout).until(EC.visibility_of_element_located((By.XPATH, xp)))


def test_dag_list_shows_mer_daily(airflow, chrome):
    chrome.get(f"{airflow.base}/dags")
    link = wait_css(chrome, f'a[data-testid="dag-id"][href$="/dags/{DAG_ID}"]', timeout=90)
    assert link.text == DAG_ID


def test_log_pane_shows_the_task_log(airflow, chrome):
    """A run for a day without raw input: the sensor's own message is in its log pane."""
    run_id = "ui_test_no_raw"
    airflow.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                    {"logical_date": "2026-02-01T00:00:00Z", "dag_run_id": run_id, "conf": {"generate_if_absent": False}})
    run = airflow.finished_run(run_id)
    assert run["state"] == "failed", run
    chrome.get(f"{airflow.base}/dags/{DAG_ID}/runs/{q(run_id)}/tasks/wait_for_raw")
    # lines can sit in collapsed ::group:: sections: settings menu -> expand all
    open_menu(chrome, '[data-testid="log-settings-button"]', '[data-testid="log-settings-expand"]').click()
    line = wait_text(chrome, "raw input for ds=2026-02-01 still missing")
    assert "engagement_log/ds=" in line.text


def test_backfill_from_the_trigger_dialog_completes(airflow, chrome):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chrome.get(f"{airflow.base}/dags/{DAG_ID}")
    wait_css(chrome, '[data-testid="trigger-dag-button"]').click()
    dialog = wait_css(chrome, "[data-scope=dialog][data-part=content]")
    # radio cards: the <input> is visually hidden, its <label> parent takes the click
    dialog.find_element(By.CSS_SELECTOR, "input[type=radio][value=backfill]").find_element(By.XPATH, "./..").click()
    for i, day in enumerate(("2026/02/02", "2026/02/03")):
        WebDriverWait(chrome, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '[data-testid="datetime-input"]')) == 2)
        chrome.find_elements(By.CSS_SELECTOR, '[data-testid="datetime-input"]')[i].click()
        pop = "[data-scope=popover][data-part=content][data-state=open]"
        type_into(chrome, f'{pop} input[placeholder="YYYY/MM/DD"]', day)
        type_into(chrome, f'{pop} input[placeholder="HH:mm"]', "00:00")
        dialog.find_element(By.XPATH, './/*[normalize-space(text())="Date Range"]').click()  # closes the popover
    wait_text(chrome, "2 runs will be triggered.")
    submit = dialog.find_element(By.XPATH, './/button[normalize-space(.)="Run Backfill"]')
    WebDriverWait(chrome, 20).until(lambda d: submit.is_enabled())
    submit.click()

    def ours():  # the list endpoint: the single-backfill GET has answered 404 while the backfill existed
        return airflow.get(f"/api/v2/backfills?dag_id={DAG_ID}")["backfills"]

    backfill = airflow.wait(ours, 30, "backfill created")[0]
    assert backfill["from_date"].startswith("2026-02-02") and backfill["to_date"].startswith("2026-02-03"), backfill
    done = airflow.wait(lambda: [b for b in ours() if b["id"] == backfill["id"] and b["completed_at"]], 300,
                        "backfill completed")[0]
    assert done["completed_at"]
    runs = airflow.get(f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=backfill")["dag_runs"]
    assert sorted(r["logical_date"][:10] for r in runs) == ["2026-02-02", "2026-02-03"], runs
    # no raw input for those days: each run stops at the sensor, nothing downstream starts
    for r in runs:
        assert r["state"] == "failed", r
        tis = {t["task_id"]: t["state"] for t in
               airflow.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{q(r['dag_run_id'])}/taskInstances?limit=100")["task_instances"]}
        assert tis["wait_for_raw"] == "failed" and tis["validate_raw"] == "upstream_failed", tis
