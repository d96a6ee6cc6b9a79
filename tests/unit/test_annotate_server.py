"""The web app over real HTTP on loopback (uvicorn in a thread): auth, privacy, escaping, CSRF guards."""

from __future__ import annotations

import http.cookiejar
import json
import threading
import time
import urllib.error
import urllib.request
from random import Random
from typing import Any

import pytest

from alignkit.annotate.store import AnnotationStore, PairItem

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2"> [x](javascript:alert(1)) **bold**'


class Client:
    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
                                                  _NoRedirect())

    def call(self, path: str, body: Any = None, headers: dict | None = None,
             raw: bytes | None = None) -> tuple[int, Any, dict]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        req = urllib.request.Request(self.base + path, data=data, headers={**hdrs, **(headers or {})})
        try:
            res = self.opener.open(req, timeout=30)
        except urllib.error.HTTPError as err:
            res = err
        text = res.read().decode()
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            payload = text
        return res.status, payload, dict(res.headers)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    from alignkit.annotate.app import create_app

    # overlap 3 with 3 annotators: everyone's first item is item 1 (fullest first), whatever ran before
    store = AnnotationStore(tmp_path_factory.mktemp("srv") / "web.db", overlap=3, rng=Random(3))
    items = [PairItem([{"role": "user", "content": f"Question {i}?"}], [{"role": "assistant", "content": f"One {i}"}],
                      [{"role": "assistant", "content": f"Two {i}"}]) for i in range(3)]
    items.insert(0, PairItem([{"role": "user", "content": "Reverse a string <b>now</b>"}],
                             [{"role": "assistant", "content": XSS}],
                             [{"role": "assistant", "content": "```python\nprint('<b>')\n```"}]))
    store.add_items(items)
    tokens = {name: store.set_annotator(name) for name in ("alice", "bob", "eve")}
    tokens["admin"] = store.set_admin_token()
    config = uvicorn.Config(create_app(store), host="127.0.0.1", port=0, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.02)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", tokens, store
    srv.should_exit = True
    thread.join(10)


def _signed_in(base: str, token: str) -> Client:
    client = Client(base)
    status, body, headers = client.call("/api/login", {"token": token})
    assert status == 200, body
    assert "httponly" in headers["set-cookie"].lower() and "samesite=strict" in headers["set-cookie"].lower()
    return client


def test_sign_in_and_pages_need_a_valid_token(server):
    base, tokens, _ = server
    anon = Client(base)
    assert anon.call("/api/login", {"token": "wrong"})[0] == 401
    assert anon.call("/api/task")[0] == 401
    assert anon.call("/label")[0] == 303  # redirected to sign-in
    status, page, headers = anon.call("/")
    assert status == 200 and "Sign in" in page
    assert "script-src 'self'" in headers["content-security-policy"]
    alice = _signed_in(base, tokens["alice"])
    assert alice.call("/label")[0] == 200
    assert alice.call("/admin/stats.json")[0] == 401  # annotators are not admins
    assert alice.call("/admin/export.jsonl")[0] == 401
    assert alice.call("/admin")[0] == 303
    bearer = Client(base).call("/api/task", headers={"Authorization": f"Bearer {tokens['bob']}"})
    assert bearer[0] == 200 and bearer[1]["name"] == "bob"


def test_model_output_is_escaped(server):
    base, tokens, store = server
    eve = _signed_in(base, tokens["eve"])  # eve is used here only, so her first item is item 1
    task = eve.call("/api/task")[1]["task"]
    html = json.dumps(task)
    assert "<script" not in html and "<img" not in html and "javascript:" not in html.replace("[x](javascript:", "")
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html
    assert "<strong>bold</strong>" in html and "&lt;b&gt;now&lt;/b&gt;" in html
    assert "print(&#x27;&lt;b&gt;&#x27;)" in html or "print('&lt;b&gt;')" in html


def test_annotators_see_only_their_items(server):
    base, tokens, store = server
    alice, bob = _signed_in(base, tokens["alice"]), _signed_in(base, tokens["bob"])
    a_task = alice.call("/api/task")[1]["task"]
    b_task = bob.call("/api/task")[1]["task"]
    assert a_task["assignment_id"] != b_task["assignment_id"]
    status, body, _ = bob.call("/api/judge", {"assignment_id": a_task["assignment_id"], "choice": "A"})
    assert status == 404 and "not found" in body["detail"]
    assert bob.call("/api/skip", {"assignment_id": a_task["assignment_id"]})[0] == 404


def test_judge_undo_and_retry_over_http(server):
    base, tokens, store = server
    bob = _signed_in(base, tokens["bob"])
    task = bob.call("/api/task")[1]["task"]
    body = {"assignment_id": task["assignment_id"], "choice": "B", "reason": "clearer", "confidence": 3,
            "time_ms": 1200, "request_id": "abc123"}
    status, first, _ = bob.call("/api/judge", body)
    assert status == 200 and first["progress"]["judged"] == 1
    again = bob.call("/api/judge", body)  # the same request retried after a lost response
    assert again[0] == 200 and again[1]["judgment_id"] == first["judgment_id"]
    assert bob.call("/api/judge", {**body, "choice": "maybe", "request_id": "x"})[0] == 422
    undone = bob.call("/api/undo", {})[1]
    assert undone["task"]["assignment_id"] == task["assignment_id"]
    assert undone["task"]["previous"] == {"choice": "B", "reason": "clearer", "confidence": 3}
    assert undone["progress"]["judged"] == 0
    rows = [r for r in store.judgments(include_undone=True) if r["annotator"] == "bob"]
    assert rows[-1]["undone_at"] is not None and rows[-1]["time_spent_ms"] == 1200


def test_state_changes_need_same_origin_json(server):
    base, tokens, store = server
    alice = _signed_in(base, tokens["alice"])
    task = alice.call("/api/task")[1]["task"]
    form = alice.call("/api/judge", raw=f"assignment_id={task['assignment_id']}&choice=A".encode(),
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form[0] == 415  # an HTML form on another site cannot post a judgment
    cross = alice.call("/api/judge", {"assignment_id": task["assignment_id"], "choice": "A"},
                       headers={"Origin": "http://evil.example"})
    assert cross[0] == 403


def test_admin_sees_stats_and_exports(server):
    base, tokens, store = server
    alice = _signed_in(base, tokens["alice"])
    task = alice.call("/api/task")[1]["task"]
    assert alice.call("/api/judge", {"assignment_id": task["assignment_id"], "choice": "A"})[0] == 200
    admin = _signed_in(base, tokens["admin"])
    status, page, _ = admin.call("/admin")
    assert status == 200 and "Fleiss" in page and "alice" in page
    stats = admin.call("/admin/stats.json")[1]
    assert f"of {stats['items']} items have 3 judgments" in page
    assert stats["judgments"] >= 1
    status, text, headers = admin.call("/admin/export.jsonl?mode=all")
    assert status == 200 and "attachment" in headers["content-disposition"]
    rows = [json.loads(line) for line in (text if isinstance(text, str) else json.dumps(text)).splitlines() if line]
    assert rows and all({"prompt", "chosen", "rejected"} <= set(r) for r in rows)


def test_prepare_issues_tokens_once_and_imports_data(tmp_path, pref_file, monkeypatch):
    from alignkit.annotate.app import ADMIN_TOKEN_ENV
    from alignkit.annotate.serve import ServeConfig, prepare

    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    cfg = ServeConfig(db=str(tmp_path / "s.db"), data=str(pref_file), annotators=("ann", "ben"), overlap=2, port=9001)
    store, lines = prepare(cfg)
    text = "\n".join(lines)
    assert "24 items, overlap 2, 2 annotators" in text and "imported 24 new pairs" in text
    token = text.split("ann: http://127.0.0.1:9001/#token=")[1].split()[0]  # in the fragment: never logged
    assert store.annotator_for(token)[1] == "ann"
    admin = text.split("admin: http://127.0.0.1:9001/#token=")[1].split()[0]
    assert store.is_admin(admin)
    again = "\n".join(prepare(cfg)[1])  # a restart: nothing re-issued, nothing imported twice
    assert "#token=" not in again and "imported 0 new pairs" in again and "issued before" in again
    with pytest.raises(ValueError, match="overlap"):
        ServeConfig(overlap=0).validate()
