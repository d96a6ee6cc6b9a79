"""SQLite storage for human preference labels: items, annotators, assignments and judgments.

Durability: the database runs in WAL mode with synchronous=FULL, and every state change (a judgment,
a skip, an undo, an assignment) is one `BEGIN IMMEDIATE` transaction on its own connection, committed
before the HTTP response is sent. A crash mid-request therefore leaves either the whole change or
none of it, and a restarted server sees every judgment it ever acknowledged.

Assignment: an item is handed to at most `overlap` annotators at a time (done judgments plus open
assignments younger than the lease), never twice to the same annotator (a UNIQUE constraint, so even
racing requests cannot break it), and items closest to completion go first so finished items pile up.
`BEGIN IMMEDIATE` serializes concurrent writers, which makes the count-then-insert race-free.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

from alignkit.errors import AlignkitError

__all__ = ["AnnotationStore", "PairItem", "Task", "Progress", "AnnotateError", "CHOICES", "winner_of",
           "new_token"]

CHOICES: tuple[str, ...] = ("A", "B", "tie", "both_bad")
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
  id INTEGER PRIMARY KEY,
  key TEXT NOT NULL UNIQUE,            -- content hash: importing a file twice adds nothing twice
  prompt TEXT NOT NULL,                -- JSON [{"role", "content"}, ...] ending with a user turn
  response1 TEXT NOT NULL,             -- JSON list of assistant messages
  response2 TEXT NOT NULL,
  source TEXT NOT NULL DEFAULT '',
  meta TEXT NOT NULL DEFAULT '{}',
  created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS annotators (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  token_hash TEXT NOT NULL,            -- sha256 of the token; the token itself is shown once
  created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
  id INTEGER PRIMARY KEY,
  item_id INTEGER NOT NULL REFERENCES items(id),
  annotator_id INTEGER NOT NULL REFERENCES annotators(id),
  shown_order TEXT NOT NULL CHECK (shown_order IN ('12', '21')),  -- '21': response 2 shown as A
  status TEXT NOT NULL CHECK (status IN ('open', 'done', 'skipped', 'released')),
  served_at REAL NOT NULL,             -- last time the item was shown: lease start and timer base
  UNIQUE (item_id, annotator_id)
);
CREATE INDEX IF NOT EXISTS assignments_item ON assignments(item_id, status);
CREATE TABLE IF NOT EXISTS judgments (
  id INTEGER PRIMARY KEY,
  assignment_id INTEGER NOT NULL REFERENCES assignments(id),
  item_id INTEGER NOT NULL REFERENCES items(id),
  annotator_id INTEGER NOT NULL REFERENCES annotators(id),
  shown_order TEXT NOT NULL,
  choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie', 'both_bad')),   -- as shown on screen
  winner TEXT NOT NULL CHECK (winner IN ('1', '2', 'tie', 'both_bad')),  -- in item terms
  reason TEXT NOT NULL DEFAULT '',
  confidence INTEGER CHECK (confidence BETWEEN 1 AND 3),
  time_spent_ms INTEGER NOT NULL,
  created_at REAL NOT NULL,
  undone_at REAL,                      -- set by undo; the row stays as an audit trail
  request_id TEXT UNIQUE               -- client-chosen: a retried submission is recorded once
);
CREATE UNIQUE INDEX IF NOT EXISTS judgments_live ON judgments(assignment_id) WHERE undone_at IS NULL;
CREATE INDEX IF NOT EXISTS judgments_annotator ON judgments(annotator_id, id);
"""


class AnnotateError(AlignkitError):
    """A request the store refuses; `status` is the HTTP status the web app answers with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PairItem:
    """One comparison to label: a prompt and two replies, in import order (1, 2)."""

    prompt: list[dict[str, str]]
    response1: list[dict[str, str]]
    response2: list[dict[str, str]]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        body = json.dumps([self.prompt, self.response1, self.response2], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(body.encode("utf-8")).hexdigest()


@dataclass
class Task:
    """An item as one annotator sees it: responses already in the shown order."""

    assignment_id: int
    item_id: int
    shown_order: str
    prompt: list[dict[str, str]]
    a: list[dict[str, str]]
    b: list[dict[str, str]]
    previous: dict[str, Any] | None = None  # the undone judgment, to prefill the form


@dataclass(frozen=True)
class Progress:
    judged: int  # this annotator's live judgments
    skipped: int
    available: int  # items this annotator could still be given (including the open one)
    items: int  # items in the database
    complete: int  # items with `overlap` live judgments


def winner_of(choice: str, shown_order: str) -> str:
    """Map an on-screen choice to item terms: A is response 1 when the order is '12'."""
    if choice not in CHOICES:
        raise AnnotateError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}", 422)
    if choice in ("tie", "both_bad"):
        return choice
    return shown_order[0] if choice == "A" else shown_order[1]


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AnnotationStore:
    """All reads and writes of one annotation database. Safe to share across threads and processes."""

    def __init__(self, path: str | Path, *, overlap: int | None = None, lease_s: float = 1800.0,
                 rng: Random | None = None) -> None:
        self.path = Path(path)
        self.lease_s = lease_s
        self._rng = rng or Random(secrets.randbits(64))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._read() as db:
            db.executescript(_SCHEMA)  # each CREATE ... IF NOT EXISTS commits on its own
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('overlap', '3')")
            if overlap is not None:
                if overlap < 1:
                    raise AnnotateError(f"overlap must be >= 1, got {overlap}", 422)
                db.execute("UPDATE meta SET value = ? WHERE key = 'overlap'", (str(overlap),))

    # ------------------------------------------------------------ connections

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        db.execute("PRAGMA synchronous=FULL")  # a committed judgment survives power loss too
        db.execute("PRAGMA foreign_keys=ON")
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed whole on success, rolled back whole on any error."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")  # take the write lock now: count-then-insert cannot race
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    @property
    def overlap(self) -> int:
        with self._read() as db:
            return int(db.execute("SELECT value FROM meta WHERE key = 'overlap'").fetchone()[0])

    # ------------------------------------------------------------ items and people

    def add_items(self, items: Iterable[PairItem]) -> tuple[int, int]:
        """Insert items in one transaction; returns (added, already present)."""
        added = seen = 0
        now = time.time()
        with self._tx() as db:
            for item in items:
                cur = db.execute(
                    "INSERT OR IGNORE INTO items (key, prompt, response1, response2, source, meta, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (item.key(), json.dumps(item.prompt, ensure_ascii=False),
                     json.dumps(item.response1, ensure_ascii=False), json.dumps(item.response2, ensure_ascii=False),
                     item.source, json.dumps(item.meta, ensure_ascii=False, default=str), now))
                added += cur.rowcount
                seen += 1 - cur.rowcount
        return added, seen

    def set_annotator(self, name: str) -> str:
        """Create the annotator, or give an existing one a new token. Returns the token (shown once)."""
        name = name.strip()
        if not name or len(name) > 64 or any(c in name for c in "<>&\"'/\\"):
            raise AnnotateError(f"annotator name {name!r} must be 1-64 characters without <>&\"'/\\", 422)
        token = new_token()
        with self._tx() as db:
            db.execute("INSERT INTO annotators (name, token_hash, created_at) VALUES (?, ?, ?) "
                       "ON CONFLICT(name) DO UPDATE SET token_hash = excluded.token_hash",
                       (name, _hash(token), time.time()))
        return token

    def annotators(self) -> list[str]:
        with self._read() as db:
            return [r[0] for r in db.execute("SELECT name FROM annotators ORDER BY id")]

    def set_admin_token(self) -> str:
        token = new_token()
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('admin_token_hash', ?)", (_hash(token),))
        return token

    def has_admin_token(self) -> bool:
        with self._read() as db:
            return db.execute("SELECT 1 FROM meta WHERE key = 'admin_token_hash'").fetchone() is not None

    def is_admin(self, token: str) -> bool:
        with self._read() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'admin_token_hash'").fetchone()
        return row is not None and hmac.compare_digest(_hash(token), row[0])

    def annotator_for(self, token: str) -> tuple[int, str] | None:
        """(id, name) of the token's owner. Every stored hash is compared in constant time, no early exit."""
        digest, found = _hash(token), None
        with self._read() as db:
            for row in db.execute("SELECT id, name, token_hash FROM annotators"):
                if hmac.compare_digest(digest, row["token_hash"]):
                    found = (row["id"], row["name"])
        return found

    # ------------------------------------------------------------ the labeling loop

    def current(self, annotator_id: int) -> Task | None:
        """The annotator's open item, or a newly assigned one; None when nothing is left for them."""
        now = time.time()
        with self._tx() as db:
            for row in db.execute("SELECT * FROM assignments WHERE annotator_id = ? AND status = 'open' "
                                  "ORDER BY served_at DESC", (annotator_id,)).fetchall():
                stale = row["served_at"] <= now - self.lease_s
                if stale and self._live_slots(db, row["item_id"], now, exclude=annotator_id) >= self.overlap:
                    # the lease ran out and others filled the item meanwhile: give it back
                    db.execute("UPDATE assignments SET status = 'released' WHERE id = ?", (row["id"],))
                    continue
                db.execute("UPDATE assignments SET served_at = ? WHERE id = ?", (now, row["id"]))
                return self._task(db, row["id"])
            item_id = self._next_item(db, annotator_id, now)
            if item_id is None:
                return None
            order = self._rng.choice(("12", "21"))  # per item and annotator, recorded with the judgment
            db.execute("INSERT INTO assignments (item_id, annotator_id, shown_order, status, served_at) "
                       "VALUES (?, ?, ?, 'open', ?) ON CONFLICT(item_id, annotator_id) "
                       "DO UPDATE SET status = 'open', served_at = excluded.served_at",
                       (item_id, annotator_id, order, now))
            aid = db.execute("SELECT id FROM assignments WHERE item_id = ? AND annotator_id = ?",
                             (item_id, annotator_id)).fetchone()[0]
            return self._task(db, aid)

    def _live_slots(self, db: sqlite3.Connection, item_id: int, now: float, exclude: int = -1) -> int:
        return db.execute("SELECT COUNT(*) FROM assignments WHERE item_id = ? AND annotator_id != ? AND "
                          "(status = 'done' OR (status = 'open' AND served_at > ?))",
                          (item_id, exclude, now - self.lease_s)).fetchone()[0]

    def _next_item(self, db: sqlite3.Connection, annotator_id: int, now: float) -> int | None:
        row = db.execute(
            """SELECT i.id, (SELECT COUNT(*) FROM assignments s WHERE s.item_id = i.id AND
                   (s.status = 'done' OR (s.status = 'open' AND s.served_at > :fresh))) AS taken
               FROM items i
               WHERE NOT EXISTS (SELECT 1 FROM assignments s WHERE s.item_id = i.id
                                 AND s.annotator_id = :me AND s.status != 'released')
                 AND taken < :overlap
               ORDER BY taken DESC, i.id LIMIT 1""",
            {"fresh": now - self.lease_s, "me": annotator_id, "overlap": self.overlap}).fetchone()
        return None if row is None else row[0]

    def _task(self, db: sqlite3.Connection, assignment_id: int, previous: dict | None = None) -> Task:
        row = db.execute("SELECT s.id, s.item_id, s.shown_order, i.prompt, i.response1, i.response2 "
                         "FROM assignments s JOIN items i ON i.id = s.item_id WHERE s.id = ?",
                         (assignment_id,)).fetchone()
        r1, r2 = json.loads(row["response1"]), json.loads(row["response2"])
        a, b = (r1, r2) if row["shown_order"] == "12" else (r2, r1)
        return Task(row["id"], row["item_id"], row["shown_order"], json.loads(row["prompt"]), a, b, previous)

    def _own_open(self, db: sqlite3.Connection, annotator_id: int, assignment_id: int) -> sqlite3.Row:
        row = db.execute("SELECT * FROM assignments WHERE id = ? AND annotator_id = ?",
                         (assignment_id, annotator_id)).fetchone()
        if row is None:  # someone else's assignment looks exactly like a missing one
            raise AnnotateError(f"assignment {assignment_id} not found", 404)
        if row["status"] != "open":
            raise AnnotateError(f"assignment {assignment_id} is already {row['status']}", 409)
        return row

    def judge(self, annotator_id: int, assignment_id: int, choice: str, *, reason: str = "",
              confidence: int | None = None, time_ms: int | None = None, request_id: str | None = None) -> int:
        """Record one judgment (its own transaction) and close the assignment; returns the judgment id.

        A repeated `request_id` (a client retrying after a lost response) returns the first row's id.
        """
        if confidence is not None and confidence not in (1, 2, 3):
            raise AnnotateError(f"confidence must be 1, 2 or 3, got {confidence!r}", 422)
        if len(reason) > 2000:
            raise AnnotateError("reason is longer than 2000 characters", 422)
        now = time.time()
        with self._tx() as db:
            if request_id:
                done = db.execute("SELECT id, annotator_id FROM judgments WHERE request_id = ?",
                                  (request_id,)).fetchone()
                if done is not None:
                    if done["annotator_id"] != annotator_id:
                        raise AnnotateError("request_id already used", 409)
                    return int(done["id"])
            row = self._own_open(db, annotator_id, assignment_id)
            winner = winner_of(choice, row["shown_order"])
            # the client's timer excludes time the tab was hidden; the server bounds it from above
            elapsed_ms = max(0, int((now - row["served_at"]) * 1000))
            spent = time_ms if time_ms is not None and 0 <= time_ms <= elapsed_ms + 2000 else elapsed_ms
            cur = db.execute(
                "INSERT INTO judgments (assignment_id, item_id, annotator_id, shown_order, choice, winner, "
                "reason, confidence, time_spent_ms, created_at, request_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (assignment_id, row["item_id"], annotator_id, row["shown_order"], choice, winner,
                 reason.strip(), confidence, spent, now, request_id or None))
            db.execute("UPDATE assignments SET status = 'done' WHERE id = ?", (assignment_id,))
            return int(cur.lastrowid)

    def skip(self, annotator_id: int, assignment_id: int) -> None:
        """Never show this item to this annotator again; its slot goes back to the pool."""
        with self._tx() as db:
            self._own_open(db, annotator_id, assignment_id)
            db.execute("UPDATE assignments SET status = 'skipped' WHERE id = ?", (assignment_id,))

    def undo(self, annotator_id: int) -> Task:
        """Withdraw the annotator's latest judgment and reopen its item (with the old answer to edit)."""
        now = time.time()
        with self._tx() as db:
            last = db.execute("SELECT * FROM judgments WHERE annotator_id = ? AND undone_at IS NULL "
                              "ORDER BY id DESC LIMIT 1", (annotator_id,)).fetchone()
            if last is None:
                raise AnnotateError("nothing to undo", 409)
            db.execute("UPDATE judgments SET undone_at = ? WHERE id = ?", (now, last["id"]))
            # the item shown after that judgment goes back to the pool
            db.execute("UPDATE assignments SET status = 'released' WHERE annotator_id = ? AND status = 'open'",
                       (annotator_id,))
            db.execute("UPDATE assignments SET status = 'open', served_at = ? WHERE id = ?",
                       (now, last["assignment_id"]))
            previous = {k: last[k] for k in ("choice", "reason", "confidence")}
            return self._task(db, last["assignment_id"], previous)

    def progress(self, annotator_id: int) -> Progress:
        now, overlap = time.time(), self.overlap
        with self._read() as db:
            judged = db.execute("SELECT COUNT(*) FROM judgments WHERE annotator_id = ? AND undone_at IS NULL",
                                (annotator_id,)).fetchone()[0]
            skipped = db.execute("SELECT COUNT(*) FROM assignments WHERE annotator_id = ? AND status = 'skipped'",
                                 (annotator_id,)).fetchone()[0]
            available = db.execute(
                """SELECT COUNT(*) FROM items i WHERE
                     EXISTS (SELECT 1 FROM assignments s WHERE s.item_id = i.id AND s.annotator_id = :me
                             AND s.status = 'open')
                     OR (NOT EXISTS (SELECT 1 FROM assignments s WHERE s.item_id = i.id AND s.annotator_id = :me
                                     AND s.status != 'released')
                         AND (SELECT COUNT(*) FROM assignments s WHERE s.item_id = i.id AND (s.status = 'done'
                              OR (s.status = 'open' AND s.served_at > :fresh))) < :overlap)""",
                {"me": annotator_id, "fresh": now - self.lease_s, "overlap": overlap}).fetchone()[0]
            items = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            complete = db.execute("SELECT COUNT(*) FROM (SELECT item_id FROM judgments WHERE undone_at IS NULL "
                                  "GROUP BY item_id HAVING COUNT(*) >= ?)", (overlap,)).fetchone()[0]
        return Progress(judged, skipped, available, items, complete)

    # ------------------------------------------------------------ reading everything back

    def items(self) -> dict[int, dict[str, Any]]:
        with self._read() as db:
            return {r["id"]: {"prompt": json.loads(r["prompt"]), "response1": json.loads(r["response1"]),
                              "response2": json.loads(r["response2"]), "source": r["source"],
                              "meta": json.loads(r["meta"])}
                    for r in db.execute("SELECT * FROM items ORDER BY id")}

    def judgments(self, include_undone: bool = False) -> list[dict[str, Any]]:
        where = "" if include_undone else "WHERE j.undone_at IS NULL"
        with self._read() as db:
            return [dict(r) for r in db.execute(
                f"SELECT j.*, a.name AS annotator FROM judgments j JOIN annotators a ON a.id = j.annotator_id "
                f"{where} ORDER BY j.id")]

    def skips(self) -> dict[str, int]:
        with self._read() as db:
            return {r[0]: r[1] for r in db.execute(
                "SELECT a.name, COUNT(*) FROM assignments s JOIN annotators a ON a.id = s.annotator_id "
                "WHERE s.status = 'skipped' GROUP BY a.name")}
