"""The web dashboard (softswitch/http/static/) in a real browser: Debian's chromium,
headless, driven by selenium through Debian's chromedriver (both installed by .ci/run;
nothing is downloaded), against a real switch with real test phones.

One operator (101) and callers (103, 104) are pjsua2 test phones. Through the page a
supervisor signs in with the switch's generated token, pauses the operator, sees a caller
wait on the wallboard (number, ticking wait), unpauses, watches the operator ring and
talk, logs the operator out and in; every button's effect is checked on the page and in
the switch's queue_log. Then the reports' charts must hold data and have drawn pixels,
the missed call and the voicemail must be listed, and the message must play in the
page's <audio> element."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support.audio import make_tone
from tests.support.e2e import registered
from tests.support.phone import wait_until
from tests.switch import RunningSwitch

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HAVE_BROWSER = all(os.path.exists(p) for p in (CHROMIUM, CHROMEDRIVER))
# On CI (.ci/run installs chromium and chromium-driver) a missing browser is a failure.
needs_browser = pytest.mark.skipif(
    not HAVE_BROWSER and not os.environ.get("CI"),
    reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
    "apt-get install chromium chromium-driver (.ci/run does)",
)

if HAVE_BROWSER or os.environ.get("CI"):
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

CHART_IDS = ("chart-heatmap", "chart-daily", "chart-hours", "chart-operators", "chart-staffing")


def switch_config(tmp: Path) -> str:
    music = make_tone(str(tmp / "music.wav"), 500.0, 2.0)
    greeting = make_tone(str(tmp / "greeting.wav"), 900.0, 0.5)
    return f"""
[block.line]
type = "queue"
members = ["101"]
music = "{music}"
exit_key = "0"
exit_target = "vm"

[block.vm]
type = "voicemail"
box = "sales"
greeting = "{greeting}"
max_seconds = 20
silence_timeout = 3
"""


def queue_log(sw: RunningSwitch, kind: str) -> list[dict]:
    with sw.db() as conn:
        rows = conn.execute("SELECT * FROM queue_log WHERE kind = ? ORDER BY id", (kind,))
        return [dict(r) for r in rows]


def session_kind(sw: RunningSwitch, agent: str) -> str | None:
    """The operator's last login / logout row's kind."""
    with sw.db() as conn:
        row = conn.execute(
            "SELECT kind FROM queue_log WHERE agent = ? AND kind IN ('login', 'logout') "
            "ORDER BY id DESC LIMIT 1",
            (agent,),
        ).fetchone()
    return row["kind"] if row else None


@pytest.fixture
def browser(tmp_path: Path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # we run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,800",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd(  # the page's viewport is 1280×800, as on a laptop
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, what: str, timeout: float = 15.0):
    """Polls `condition()` until it returns something truthy (which is returned)."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda _: condition())
    except TimeoutException:
        raise AssertionError(f"the page did not show {what} within {timeout} s") from None


def operator_row(driver, agent: str) -> dict | None:
    return driver.execute_script(
        """const tr = document.querySelector(`#operators tr[data-agent="${arguments[0]}"]`);
        if (!tr) return null;
        return {status: tr.dataset.status, state: tr.dataset.state, text: tr.innerText,
                since: tr.querySelector('.op-since').textContent,
                buttons: [...tr.querySelectorAll('button[data-action]')]
                    .filter(b => !b.hidden).map(b => b.dataset.action)};""",
        agent,
    )


def click_operator(driver, agent: str, action: str) -> None:
    driver.find_element(
        By.CSS_SELECTOR, f'#operators button[data-agent="{agent}"][data-action="{action}"]'
    ).click()


def waiting_callers(driver, queue: str) -> list[dict]:
    return driver.execute_script(
        """const card = document.querySelector(`section[data-queue="${arguments[0]}"]`);
        if (!card) return [];
        return [...card.querySelectorAll('table.waiting tbody tr')].map(tr => ({
            number: tr.querySelector('.caller-number').textContent,
            wait: tr.querySelector('.wait').textContent}));""",
        queue,
    )


def queue_stats(driver, queue: str) -> dict:
    return driver.execute_script(
        """const card = document.querySelector(`section[data-queue="${arguments[0]}"]`);
        const out = {};
        for (const s of card.querySelectorAll('.stat'))
            out[s.querySelector('.stat-label').textContent] =
                s.querySelector('.stat-value').textContent;
        return out;""",
        queue,
    )


CHART_STATE = """
const canvas = document.getElementById(arguments[0]);
const chart = window.Chart && Chart.getChart(canvas);
if (!chart) return null;
let points = 0;
for (const ds of chart.data.datasets)
    for (const v of ds.data)
        if (v != null && (typeof v === 'object' ? v.v > 0 : v > 0)) points++;
const ctx = canvas.getContext('2d');
const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
let painted = 0;
for (let i = 3; i < px.length; i += 4) if (px[i] > 0) painted++;
return {type: chart.config.type, points, painted, pixels: canvas.width * canvas.height};
"""


@needs_browser
def test_wallboard_buttons_reports_missed_and_voicemail_in_a_real_browser(tmp_path, made, browser):
    sw = RunningSwitch(tmp_path, switch_config(tmp_path), entry='"line"', entry_number='"100"')
    try:
        run_dashboard(sw, made, browser)
    except BaseException:
        shot = tmp_path / "dashboard-failure.png"
        browser.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
        for entry in browser.get_log("browser"):
            print("browser:", entry)
        raise
    finally:
        sw.stop()


def run_dashboard(sw: RunningSwitch, made: list, d) -> None:
    op = registered(sw, "101", made)
    assert wait_until(lambda: session_kind(sw, "101") == "login")

    # -- sign in with the token the switch generated ---------------------------------
    token = (sw.data_dir / "http-token").read_text().strip()
    d.get(f"http://127.0.0.1:{sw.http_port}/")
    d.find_element(By.ID, "token").send_keys(token)
    d.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]").click()
    row = wait_for(
        d,
        lambda: (r := operator_row(d, "101")) and r["status"] == "available" and r,
        "operator 101 available",
    )
    assert "Alice" in row["text"] and "online" in row["text"]
    assert row["buttons"] == ["logout", "pause"]
    wait_for(d, lambda: d.find_element(By.ID, "live").get_attribute("data-live") == "true",
             "the event stream connected")  # fmt: skip

    # -- Pause (with a reason, through the dialog) -------------------------------------
    click_operator(d, "101", "pause")
    reason = d.find_element(By.ID, "pause-reason")
    reason.clear()
    reason.send_keys("lunch")
    d.find_element(By.ID, "pause-confirm").click()
    row = wait_for(
        d, lambda: (r := operator_row(d, "101")) and r["status"] == "paused" and r, "paused"
    )
    assert "lunch" in row["text"] and row["buttons"] == ["logout", "unpause"]
    assert wait_until(lambda: queue_log(sw, "pause"))
    assert queue_log(sw, "pause")[0]["reason"] == "lunch"
    since = row["since"]
    wait_for(d, lambda: operator_row(d, "101")["since"] != since, "the 'since' timer ticking")

    # -- a real caller waits in the queue: the wallboard shows them ----------------------
    caller = registered(sw, "103", made)
    call = caller.call("100")
    caller.wait_state(call, "confirmed")
    waiting = wait_for(d, lambda: waiting_callers(d, "line"), "the waiting caller")
    assert [w["number"] for w in waiting] == ["103"]
    first = waiting[0]["wait"]
    wait_for(d, lambda: waiting_callers(d, "line")[0]["wait"] != first, "the wait ticking")
    stats = queue_stats(d, "line")
    assert stats["waiting"] == "1"
    assert stats["longest wait"] not in ("–", "0:00")
    wait_for(
        d,
        lambda: "103" in d.find_element(By.ID, "calls").text,
        "the caller in the active calls",
    )

    # The caller leaves by the exit key and leaves a message (2 s of 440 Hz).
    caller.send_dtmf(call, "0")
    assert wait_until(lambda: queue_log(sw, "left"))
    wait_for(d, lambda: not waiting_callers(d, "line"), "the queue empty again")
    time.sleep(1.2)  # the 0.5 s greeting and the beep
    caller.play_tone(call, 440.0, 2.0)
    time.sleep(2.0)
    caller.hangup(call)
    with sw.db() as conn:
        assert wait_until(lambda: conn.execute("SELECT COUNT(*) FROM voicemail").fetchone()[0])

    # -- Unpause; the next caller rings the operator, who answers -----------------------
    click_operator(d, "101", "unpause")
    wait_for(d, lambda: operator_row(d, "101")["status"] == "available", "unpaused")
    assert wait_until(lambda: queue_log(sw, "unpause"))
    caller2 = registered(sw, "104", made)
    call2 = caller2.call("100")
    caller2.wait_state(call2, "confirmed")
    incoming = op.wait_incoming()
    row = wait_for(
        d, lambda: (r := operator_row(d, "101")) and r["state"] == "ringing" and r, "ringing"
    )
    assert "104" in row["text"]
    op.answer(incoming)
    op.wait_state(incoming, "confirmed")
    row = wait_for(
        d, lambda: (r := operator_row(d, "101")) and r["state"] == "talking" and r, "talking"
    )
    assert "104" in row["text"]
    time.sleep(1.0)  # a second of talk
    caller2.hangup(call2)
    op.wait_state(incoming, "disconnected")
    assert wait_until(lambda: queue_log(sw, "completed"))
    wait_for(d, lambda: operator_row(d, "101")["state"] == "idle", "idle after the call")
    wait_for(d, lambda: queue_stats(d, "line")["handling ratio today"] == "50.0 %",
             "today's handling ratio (1 of 2)")  # fmt: skip
    assert queue_stats(d, "line")["service level today"] == "50.0 %"

    # -- Log out, Log in -------------------------------------------------------------------
    click_operator(d, "101", "logout")
    row = wait_for(
        d,
        lambda: (r := operator_row(d, "101")) and r["status"] == "logged_out" and r,
        "logged out",
    )
    assert row["buttons"] == ["login"]
    assert wait_until(lambda: session_kind(sw, "101") == "logout")
    assert queue_log(sw, "logout")[-1]["agent"] == "101"
    click_operator(d, "101", "login")
    row = wait_for(
        d,
        lambda: (r := operator_row(d, "101")) and r["status"] == "available" and r,
        "logged in again",
    )
    assert row["buttons"] == ["logout", "pause"]
    assert wait_until(lambda: session_kind(sw, "101") == "login")
    assert len(queue_log(sw, "login")) == 2  # by registration, then by the button

    # -- Reports: every chart has data and drew pixels ---------------------------------
    d.find_element(By.ID, "tab-reports").click()
    wait_for(d, lambda: d.execute_script("return document.body.dataset.reports"), "reports")
    for chart_id in CHART_IDS:
        got = wait_for(
            d,
            lambda cid=chart_id: (
                (s := d.execute_script(CHART_STATE, cid))
                and s["points"] > 0
                and s["painted"] > 0.01 * s["pixels"]
                and s
            ),
            f"chart {chart_id} drawn with data",
        )
        assert got["pixels"] > 10_000, (chart_id, got)
    assert d.execute_script(CHART_STATE, "chart-heatmap")["type"] == "matrix"
    totals = d.find_element(By.ID, "reports-totals").text
    assert "2\noffered" in totals and "1\nanswered" in totals, totals
    report_row = d.find_element(By.CSS_SELECTOR, '#operators-report tbody tr[data-agent="101"]')
    cells = [c.text for c in report_row.find_elements(By.CSS_SELECTOR, "th, td")]
    assert cells[0] == "Alice (101)" and cells[4] == "1", cells  # answered: 1

    # -- Missed calls: the caller who left for voicemail, nobody rung (paused) ----------
    d.find_element(By.ID, "tab-missed").click()
    missed = wait_for(
        d,
        lambda: d.find_elements(By.CSS_SELECTOR, "#missed-table tbody tr"),
        "the missed caller",
    )
    text = missed[0].text
    assert len(missed) == 1 and "103" in text and "pressed the exit key" in text, text
    assert "nobody" in text and "not yet" in text, text

    # -- Voicemail: listed, and it plays in the page --------------------------------------
    d.find_element(By.ID, "tab-voicemail").click()
    item = wait_for(
        d,
        lambda: d.find_elements(By.CSS_SELECTOR, "#voicemail-table tbody tr"),
        "the voicemail",
    )[0]
    assert "sales" in item.text and "103" in item.text and "new" in item.text, item.text
    item.find_element(By.CSS_SELECTOR, "button.play").click()
    audio = wait_for(
        d,
        lambda: d.execute_script(
            """const a = document.getElementById('audio');
            return a.readyState >= 1 && !a.error && a.src.startsWith('blob:')
                && {duration: a.duration, src: a.src};"""
        ),
        "the message loaded in the audio player",
    )
    assert 1.0 < audio["duration"] < 8.0, audio
    playing = "return document.getElementById('audio').currentTime > 0.2"
    wait_for(d, lambda: d.execute_script(playing), "the message playing")
    with sw.db() as conn:
        assert wait_until(lambda: conn.execute("SELECT heard FROM voicemail").fetchone()[0])

    errors = [
        e for e in d.get_log("browser") if e["level"] == "SEVERE" and e["source"] == "javascript"
    ]
    assert not errors, errors


@needs_browser
def test_a_wrong_token_is_refused_and_the_page_asks_again(tmp_path, browser):
    sw = RunningSwitch(tmp_path)
    try:
        d = browser
        d.get(f"http://127.0.0.1:{sw.http_port}/")
        d.find_element(By.ID, "token").send_keys("not-the-token")
        d.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]").click()
        wait_for(d, lambda: "refused" in d.find_element(By.ID, "signin-error").text, "refusal")
        assert not d.find_element(By.ID, "tabs").is_displayed()
        assert d.execute_script("return localStorage.getItem('softswitch.token')") is None
        # The right token works, and is kept across a reload.
        token = (sw.data_dir / "http-token").read_text().strip()
        d.find_element(By.ID, "token").send_keys(token)
        d.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]").click()
        wait_for(d, lambda: d.find_element(By.ID, "tabs").is_displayed(), "the tabs")
        d.refresh()
        wait_for(d, lambda: d.find_element(By.ID, "tabs").is_displayed(), "the tabs again")
        assert d.find_element(By.ID, "summary").text  # status line filled from /api/status
    finally:
        sw.stop()


def test_the_static_files_are_there_with_their_licences():
    static = Path(__file__).resolve().parents[1] / "softswitch" / "http" / "static"
    for name in ("index.html", "app.js", "style.css"):
        assert (static / name).is_file(), name
    vendor = static / "vendor"
    assert "Chart.js v4." in (vendor / "chart.umd.min.js").read_text()[:200]
    assert "chartjs-chart-matrix v3." in (vendor / "chartjs-chart-matrix.min.js").read_text()[:200]
    for licence in ("chart.js-LICENSE.md", "chartjs-chart-matrix-LICENSE.md"):
        assert "MIT License" in (vendor / licence).read_text()
