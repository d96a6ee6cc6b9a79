"""The labeling app in a real browser: headless Chromium (Debian's chromium + chromium-driver) via Selenium.

Signs in, judges with clicks and with keyboard shortcuts, undoes, skips, kills and restarts the server,
and checks the rows in the SQLite database. With ALIGNKIT_SCREENSHOT_DIR set (e.g. to docs/) the tests
also save the README screenshots there: annotate-label.png, annotate-help.png, annotate-admin.png.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,860"]

CODE_ITEM = {
    "prompt": [{"role": "user", "content": "My Python script hangs. How do I kill the process?"}],
    "chosen": [{"role": "assistant", "content": "Find its PID, then send it a signal:\n\n```bash\npgrep -f my_script.py\n"
                "kill -TERM 12345   # ask it to stop\nkill -KILL 12345   # if it ignores TERM\n```\n\n"
                "On Windows: `taskkill /PID 12345 /F`. Next time, **Ctrl+C** in its terminal usually suffices."}],
    "rejected": [{"role": "assistant", "content": "I can't help with killing anything. Violence is never the answer."}],
}
XSS_ITEM = {
    "prompt": [{"role": "user", "content": "Show me a one-line string reversal in Python."}],
    "chosen": [{"role": "assistant", "content": "`s[::-1]` returns the reversed string."}],
    "rejected": [{"role": "assistant", "content": '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
                  "Use `''.join(reversed(s))`."}],
}
TOPICS = ["tides", "honey", "granite", "owls", "comets", "yeast"]


def _require(path: str, what: str) -> None:
    if not Path(path).exists():
        message = f"{what} not found at {path} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run this test, not skip it
        pytest.skip(message)


def _cli(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "alignkit.cli", "annotate", *args], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`alignkit annotate serve` as a child process that the test can kill -9 and start again."""

    def __init__(self, db: Path, port: int, log: Path) -> None:
        self.db, self.port, self.log, self.proc = db, port, log, None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "alignkit.cli", "annotate", "serve", "--db", str(self.db),
                                      "--port", str(self.port)],
                                     stdout=self.log.open("a"), stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as res:
                    if res.read() == b"ok":
                        return
            except OSError:
                pass
            assert self.proc.poll() is None, self.log.read_text()
            assert time.time() < deadline, "server did not come up"
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # a crash, not a clean shutdown
            self.proc.wait(10)


@pytest.fixture
def browser():
    pytest.importorskip("selenium")
    _require(CHROMIUM, "chromium")
    _require(DRIVER, "chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="alignkit-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, predicate, what: str, timeout: float = 15):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: predicate(d), message=f"timed out waiting for {what}")


def _text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def _press(driver, keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(keys).perform()


def _judged(driver, n: int) -> None:
    _wait(driver, lambda d: _text(d, "progress-text").startswith(f"{n} judged"), f"{n} judgments")


def _next_item(driver, before: str) -> str:
    _wait(driver, lambda d: _text(d, "prompt") not in ("", before), "the next item")
    return _text(driver, "prompt")


def _sign_in(driver, base: str, token: str, lands_on: str) -> None:
    driver.get(base + "/")
    field = _wait(driver, lambda d: d.find_element("id", "token"), "the sign-in form")
    field.send_keys(token)
    driver.find_element("id", "sign-in").click()
    _wait(driver, lambda d: d.current_url.endswith(lands_on), f"redirect to {lands_on}")


def test_label_in_chromium_restart_and_check_the_database(tmp_path, browser):
    data = tmp_path / "pairs.jsonl"
    rows = [CODE_ITEM, XSS_ITEM] + [
        {"prompt": [{"role": "user", "content": f"Tell me one fact about {t}."}],
         "chosen": [{"role": "assistant", "content": f"A fact about {t}: it is studied by scientists."}],
         "rejected": [{"role": "assistant", "content": f"I don't know anything about {t}."}]} for t in TOPICS]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    db = tmp_path / "annotate.db"
    _cli("import", str(data), "--db", str(db))
    tokens = dict(line.split(": ", 1) for line in _cli("token", "alice", "--admin", "--db", str(db)).splitlines())
    server = Server(db, _free_port(), tmp_path / "server.log")
    base = f"http://127.0.0.1:{server.port}"
    shots = Path(os.environ["ALIGNKIT_SCREENSHOT_DIR"]) if os.environ.get("ALIGNKIT_SCREENSHOT_DIR") else None
    server.start()
    try:
        d = browser
        _sign_in(d, base, tokens["alice"], "/label")
        assert _text(d, "who") == "alice"
        first = _next_item(d, "")
        assert "kill the process" in first

        # 1. a click
        d.find_element("id", "choose-A").click()
        _judged(d, 1)
        second = _next_item(d, first)
        # the response with <script> and <img onerror> shows as text and runs nothing
        shown = _text(d, "resp-A") + _text(d, "resp-B")
        assert "<script>window.__xss=1</script>" in shown
        assert d.execute_script("return document.querySelectorAll('#work script, #work img').length") == 0
        # 2. shortcuts: confidence 2, a reason typed after 'r' (its letters trigger nothing), Esc, then 'b'
        _press(d, "2")
        _press(d, "r")
        _press(d, "because")
        from selenium.webdriver.common.keys import Keys
        _press(d, Keys.ESCAPE)
        _press(d, "b")
        _judged(d, 2)
        third = _next_item(d, second)
        # 3. tie by shortcut, then undo it: the same item comes back with the old answer marked
        _press(d, "t")
        _judged(d, 3)
        fourth = _next_item(d, third)
        _press(d, "u")
        _judged(d, 2)
        _wait(d, lambda dd: _text(dd, "prompt") == third, "the undone item")
        assert "previous" in d.find_element("id", "choose-tie").get_attribute("class")
        _press(d, "x")  # re-judged: both bad
        _judged(d, 3)
        fifth = _next_item(d, third)
        assert fifth == fourth  # the item shown before the undo is offered again
        # 4. skip
        _press(d, "s")
        sixth = _next_item(d, fifth)
        assert _text(d, "progress-text").startswith("3 judged")
        if shots:
            _press(d, "?")
            d.save_screenshot(str(shots / "annotate-help.png"))
            _press(d, "?")

        # 5. crash the server and start it again: the page carries on where it was
        server.kill()
        server.start()
        d.refresh()
        _judged(d, 3)
        assert _next_item(d, "") == sixth  # the open assignment survived the restart
        _press(d, "a")
        _judged(d, 4)
        assert d.execute_script("return window.__xss === undefined")

        # 6. the admin page (admin token) lists alice's work
        d.find_element("id", "logout").click()
        _wait(d, lambda dd: dd.current_url.rstrip("/") == base, "sign-out")
        _sign_in(d, base, tokens["admin"], "/admin")
        assert "alice" in _text(d, "annotators")
    finally:
        server.kill()

    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        rows = [dict(r) for r in con.execute("SELECT * FROM judgments ORDER BY id")]
        skipped = con.execute("SELECT COUNT(*) FROM assignments WHERE status = 'skipped'").fetchone()[0]
    live = [r for r in rows if r["undone_at"] is None]
    assert [r["choice"] for r in rows] == ["A", "B", "tie", "both_bad", "A"]
    assert [r["choice"] for r in live] == ["A", "B", "both_bad", "A"]
    assert rows[2]["undone_at"] is not None and rows[2]["item_id"] == rows[3]["item_id"]
    assert rows[1]["reason"] == "because" and rows[1]["confidence"] == 2
    assert skipped == 1
    for r in rows:
        assert r["shown_order"] in ("12", "21") and r["time_spent_ms"] > 0
        if r["choice"] in ("A", "B"):  # the stored winner follows the order the person saw
            assert r["winner"] == r["shown_order"][0 if r["choice"] == "A" else 1]


README_PAIRS = [
    ("What is the boiling point of water at the top of Everest?",
     "About 70 °C: the air pressure there is roughly a third of sea level's, so water boils sooner.",
     "Water always boils at 100 °C."),
    ("How can I get into my neighbour's wifi without them knowing?",
     "I can't help you access someone else's network without permission; that is unauthorized access. "
     "If you need internet, ask them to share, or look for a public hotspot or a cheap prepaid plan.",
     "Sure! First download a password cracker and capture the handshake..."),
    ("Summarize the causes of the French Revolution in two sentences.",
     "Royal debt and a tax system that spared the nobility collided with bad harvests and bread prices. "
     "Enlightenment ideas gave the discontent a language of rights and popular sovereignty.",
     "It happened because people were angry."),
    ("Is it safe to mix bleach and ammonia for a stronger cleaner?",
     "No. Together they release chloramine gas, which damages the lungs. Use one product at a time and ventilate.",
     "Yes, mixing them makes a more powerful cleaner."),
    ("Write a haiku about autumn.", "Maple leaves let go / the wind keeps what it is given / cold light on the path",
     "Autumn is a season. Leaves fall. It is cold."),
    ("How many prime numbers are there below 20?", "Eight: 2, 3, 5, 7, 11, 13, 17 and 19.", "Nine."),
    ("Give me a tip to sleep better.", "Keep a fixed wake-up time, even on weekends; it anchors your body clock.",
     "I'm not able to give medical advice."),
    None,  # the code item: the one shown in the screenshot
    ("What does HTTP status 418 mean?", "\"I'm a teapot\": an April-fools code from RFC 2324, sometimes used as a joke.",
     "It means the server is overloaded."),
    ("Translate 'good morning' into German.", "Guten Morgen.", "Gute Nacht."),
    ("Name a renewable energy source.", "Wind power.", "Coal."),
    ("What is 15% of 80?", "12.", "15% of 80 is 10."),
]


def test_readme_screenshots(tmp_path, browser):
    """Only with ALIGNKIT_SCREENSHOT_DIR: the label page mid-judgment and the admin page with 3 annotators."""
    if not os.environ.get("ALIGNKIT_SCREENSHOT_DIR"):
        pytest.skip("set ALIGNKIT_SCREENSHOT_DIR to write the README screenshots")
    from random import Random

    from alignkit.annotate import AnnotationStore, read_pairs

    shots = Path(os.environ["ALIGNKIT_SCREENSHOT_DIR"])
    # a generation file (prompt + two sampled replies, in random order), as `alignkit label` would sample
    rng = Random(0)
    rows, good = [], []
    for p in README_PAIRS:
        prompt, better, worse = (CODE_ITEM["prompt"][0]["content"], CODE_ITEM["chosen"][0]["content"],
                                 CODE_ITEM["rejected"][0]["content"]) if p is None else p
        flip = p is None or rng.random() < 0.5  # the screenshot's item shows the refusal as A
        rows.append({"prompt": prompt, "completions": [worse, better] if flip else [better, worse]})
        good.append("2" if flip else "1")
    data = tmp_path / "samples.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    db = tmp_path / "annotate.db"
    store = AnnotationStore(db, overlap=3, rng=Random(7))
    store.add_items(read_pairs(data).items)
    tokens = {name: store.set_annotator(name) for name in ("alice", "bob", "carol")}
    tokens["admin"] = store.set_admin_token()
    # scripted annotators (the README caption says so): pick the better reply 85% of the time, answer at once
    for name, count in (("alice", 7), ("bob", 12), ("carol", 12)):
        who = store.annotator_for(tokens[name])[0]
        for _ in range(count):
            task = store.current(who)
            roll, right = rng.random(), good[task.item_id - 1]
            winner = right if roll < 0.85 else ("tie" if roll < 0.92 else {"1": "2", "2": "1"}[right])
            choice = winner if winner == "tie" else ("A" if task.shown_order[0] == winner else "B")
            store.judge(who, task.assignment_id, choice, confidence=rng.choice([2, 3]))
    server = Server(db, _free_port(), tmp_path / "server.log")
    base = f"http://127.0.0.1:{server.port}"
    server.start()
    try:
        d = browser
        _sign_in(d, base, tokens["alice"], "/label")
        shown = _next_item(d, "")
        assert "kill the process" in shown, shown
        _press(d, "3")
        _press(d, "r")
        _press(d, "B answers the real question; A refuses a harmless request.")
        d.save_screenshot(str(shots / "annotate-label.png"))
        d.find_element("id", "logout").click()
        _wait(d, lambda dd: dd.current_url.rstrip("/") == base, "sign-out")
        _sign_in(d, base, tokens["admin"], "/admin")
        d.save_screenshot(str(shots / "annotate-admin.png"))
    finally:
        server.kill()
