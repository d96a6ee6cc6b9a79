"""The SQLite store: overlap, never twice to one person, skip, undo, concurrency, crash safety."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from random import Random

import pytest

from alignkit.annotate.store import AnnotateError, AnnotationStore, PairItem, winner_of


def _items(n: int) -> list[PairItem]:
    return [PairItem([{"role": "user", "content": f"question {i}"}],
                     [{"role": "assistant", "content": f"good answer {i}"}],
                     [{"role": "assistant", "content": f"bad answer {i}"}], f"t:{i}") for i in range(n)]


def _store(tmp_path: Path, n: int = 4, overlap: int = 2, **kw) -> AnnotationStore:
    store = AnnotationStore(tmp_path / "a.db", overlap=overlap, rng=Random(0), **kw)
    store.add_items(_items(n))
    return store


def _people(store: AnnotationStore, *names: str) -> list[int]:
    for name in names:
        store.set_annotator(name)
    with sqlite3.connect(store.path) as db:
        ids = dict(db.execute("SELECT name, id FROM annotators"))
    return [ids[n] for n in names]


def _label_all(store: AnnotationStore, who: int, choice: str = "A") -> list[int]:
    seen = []
    while (task := store.current(who)) is not None:
        seen.append(task.item_id)
        store.judge(who, task.assignment_id, choice)
    return seen


def test_overlap_caps_judgments_and_never_repeats_an_item(tmp_path):
    store = _store(tmp_path, n=4, overlap=2)
    a, b, c = _people(store, "a", "b", "c")
    assert sorted(_label_all(store, a)) == [1, 2, 3, 4]
    assert sorted(_label_all(store, b)) == [1, 2, 3, 4]
    assert _label_all(store, c) == []  # every item already has its 2 judgments
    pairs = [(j["annotator"], j["item_id"]) for j in store.judgments()]
    assert len(pairs) == len(set(pairs)) == 8
    p = store.progress(c)
    assert (p.judged, p.available, p.items, p.complete) == (0, 0, 4, 4)


def test_import_is_idempotent_and_order_is_random_but_recorded(tmp_path):
    store = _store(tmp_path, n=40, overlap=1)
    assert store.add_items(_items(40)) == (0, 40)
    (a,) = _people(store, "a")
    orders = Counter()
    items = store.items()
    while (task := store.current(a)) is not None:
        orders[task.shown_order] += 1
        first = items[task.item_id]["response1"] if task.shown_order == "12" else items[task.item_id]["response2"]
        assert task.a == first
        store.judge(a, task.assignment_id, "A")
    assert orders["12"] > 5 and orders["21"] > 5  # random per item (seeded here)
    for j in store.judgments():
        assert j["winner"] == j["shown_order"][0]  # "A" is whichever response was shown first


def test_winner_mapping():
    assert winner_of("A", "12") == "1" and winner_of("B", "12") == "2"
    assert winner_of("A", "21") == "2" and winner_of("B", "21") == "1"
    assert winner_of("tie", "21") == "tie" and winner_of("both_bad", "12") == "both_bad"
    with pytest.raises(AnnotateError):
        winner_of("C", "12")


def test_skip_frees_the_slot_and_hides_the_item_from_that_person(tmp_path):
    store = _store(tmp_path, n=2, overlap=1)
    a, b = _people(store, "a", "b")
    first = store.current(a)
    store.skip(a, first.assignment_id)
    assert store.current(a).item_id != first.item_id
    assert first.item_id in _label_all(store, b)  # the skipped item went back to the pool
    with pytest.raises(AnnotateError, match="already skipped"):
        store.skip(a, first.assignment_id)
    assert store.skips() == {"a": 1}


def test_undo_reopens_the_last_item_with_the_old_answer(tmp_path):
    store = _store(tmp_path, n=3, overlap=1)
    (a,) = _people(store, "a")
    t1 = store.current(a)
    store.judge(a, t1.assignment_id, "B", reason="B is kinder", confidence=2)
    t2 = store.current(a)
    back = store.undo(a)
    assert (back.item_id, back.shown_order, back.a) == (t1.item_id, t1.shown_order, t1.a)
    assert back.previous == {"choice": "B", "reason": "B is kinder", "confidence": 2}
    assert store.current(a).item_id == t1.item_id  # the reopened item is the current one
    assert store.progress(a).judged == 0
    store.judge(a, back.assignment_id, "A")
    rows = store.judgments(include_undone=True)
    assert [(r["choice"], r["undone_at"] is not None) for r in rows] == [("B", True), ("A", False)]
    # the item shown after the undone judgment was released and comes back later
    assert t2.item_id in [t2.item_id, *_label_all(store, a)]
    assert sorted(j["item_id"] for j in store.judgments()) == [1, 2, 3]
    with pytest.raises(AnnotateError, match="not found"):
        store.judge(a, 999, "A")


def test_undo_with_nothing_to_undo_is_a_clear_error(tmp_path):
    store = _store(tmp_path)
    (a,) = _people(store, "a")
    with pytest.raises(AnnotateError, match="nothing to undo"):
        store.undo(a)


def test_assignments_are_private_and_retries_are_recorded_once(tmp_path):
    store = _store(tmp_path)
    a, b = _people(store, "a", "b")
    task = store.current(a)
    with pytest.raises(AnnotateError) as err:
        store.judge(b, task.assignment_id, "A")
    assert err.value.status == 404  # someone else's assignment looks like a missing one
    first = store.judge(a, task.assignment_id, "A", request_id="req-1")
    assert store.judge(a, task.assignment_id, "A", request_id="req-1") == first
    assert len(store.judgments()) == 1
    with pytest.raises(AnnotateError, match="already done"):
        store.judge(a, task.assignment_id, "B", request_id="req-2")


def test_time_spent_is_bounded_by_the_server_clock(tmp_path):
    store = _store(tmp_path)
    (a,) = _people(store, "a")
    t = store.current(a)
    store.judge(a, t.assignment_id, "A", time_ms=10**9)  # claims 11 days on an item shown just now
    t = store.current(a)
    time.sleep(0.05)
    store.judge(a, t.assignment_id, "A", time_ms=30)
    spent = [j["time_spent_ms"] for j in store.judgments()]
    assert spent[0] < 5000 and spent[1] == 30


def test_tokens(tmp_path):
    store = _store(tmp_path)
    token = store.set_annotator("alice")
    assert store.annotator_for(token)[1] == "alice"
    assert store.annotator_for(token + "x") is None and not store.is_admin(token)
    admin = store.set_admin_token()
    assert store.is_admin(admin) and store.annotator_for(admin) is None
    new = store.set_annotator("alice")  # rotation: the old token stops working
    assert store.annotator_for(token) is None and store.annotator_for(new)[1] == "alice"
    with pytest.raises(AnnotateError, match="must be"):
        store.set_annotator("<script>")


def test_expired_lease_returns_the_item_to_the_pool(tmp_path):
    store = _store(tmp_path, n=2, overlap=1, lease_s=0.05)
    a, b = _people(store, "a", "b")
    held = store.current(a)
    time.sleep(0.1)  # a walked away
    taken = store.current(b)
    assert taken.item_id == held.item_id
    store.judge(b, taken.assignment_id, "A")
    # a comes back: the item is full now, so a gets the other one instead
    assert store.current(a).item_id != held.item_id


def test_concurrent_annotators_respect_overlap(tmp_path):
    store = _store(tmp_path, n=12, overlap=3)
    ids = _people(store, *[f"p{i}" for i in range(6)])
    errors: list[BaseException] = []

    def work(who: int) -> None:
        try:
            _label_all(store, who)
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    per_item = Counter(j["item_id"] for j in store.judgments())
    assert per_item == {i: 3 for i in range(1, 13)}
    pairs = [(j["annotator"], j["item_id"]) for j in store.judgments()]
    assert len(pairs) == len(set(pairs))


def test_two_tabs_of_one_person_share_the_open_item(tmp_path):
    store = _store(tmp_path, n=5, overlap=1)
    (a,) = _people(store, "a")
    results = []
    threads = [threading.Thread(target=lambda: results.append(store.current(a).assignment_id)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(results)) == 1


def test_failure_mid_judgment_leaves_nothing_half_written(tmp_path):
    store = _store(tmp_path)
    (a,) = _people(store, "a")
    task = store.current(a)
    with sqlite3.connect(store.path) as db:  # the second statement of the transaction fails
        db.execute("CREATE TRIGGER boom BEFORE UPDATE ON assignments BEGIN SELECT RAISE(ABORT, 'boom'); END")
    with pytest.raises(sqlite3.IntegrityError, match="boom"):
        store.judge(a, task.assignment_id, "A")
    assert store.judgments(include_undone=True) == []  # the judgment row was rolled back with it
    with sqlite3.connect(store.path) as db:
        db.execute("DROP TRIGGER boom")
    store.judge(a, task.assignment_id, "A")
    assert len(store.judgments()) == 1


_CRASH = """
import os, sys
from alignkit.annotate.store import AnnotationStore
store = AnnotationStore(sys.argv[1])
connect = store._connect
def dying_connect():
    db = connect()
    db.create_function("die", 0, lambda: os.kill(os.getpid(), 9))
    return db
store._connect = dying_connect
who = int(sys.argv[2])
task = store.current(who)
if sys.argv[3] == "after-commit":
    store.judge(who, task.assignment_id, "B", reason="kept")
    os.kill(os.getpid(), 9)
store.judge(who, task.assignment_id, "A", reason="lost")  # the trigger kills the process mid-transaction
"""


def test_a_killed_process_loses_only_the_uncommitted_judgment(tmp_path):
    store = _store(tmp_path, n=3, overlap=1)
    (a,) = _people(store, "a")
    run = [sys.executable, "-c", _CRASH, str(store.path), str(a)]
    assert subprocess.run(run + ["after-commit"], timeout=60).returncode == -9
    assert [j["reason"] for j in store.judgments()] == ["kept"]
    with sqlite3.connect(store.path) as db:
        db.execute("CREATE TRIGGER die_mid_request AFTER INSERT ON judgments BEGIN SELECT die(); END")
    assert subprocess.run(run + ["mid-transaction"], timeout=60).returncode == -9
    with sqlite3.connect(store.path) as db:
        db.execute("DROP TRIGGER die_mid_request")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert [j["reason"] for j in store.judgments()] == ["kept"]  # the half-done judgment is gone
    task = store.current(a)  # the write lock died with the process; the item is still open
    store.judge(a, task.assignment_id, "tie")
    assert len(AnnotationStore(store.path).judgments()) == 2  # a fresh store (a restart) sees both
