"""The SQLite results store: round trips, run references, resume bookkeeping, atomic JSON."""

from __future__ import annotations

import json
import math

import pytest

from alignkit.errors import AlignkitError
from alignkit.evals.records import Metric, Record
from alignkit.store import ResultStore, write_json_atomic


def _rec(task: str, item: str, score: float, **meta) -> Record:
    return Record(task=task, item_id=item, prompt=f"p{item}", output=f"o{item}", score=score,
                  scores={"acc": score, "maybe": math.nan}, tokens=3, latency_s=0.5, meta=meta)


def test_records_and_aggregates_round_trip(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        assert store.start_run("run1", model="m", suite="quick", config={"limit": 2}) is False
        store.add_records("run1", [_rec("arc", "1", 1.0, label="safe"), _rec("arc", "2", 0.0)])
        store.add_records("run1", [_rec("arc", "2", 1.0)])  # a recomputed item replaces the old row
        store.set_aggregates("run1", "arc", {"acc": Metric(1.0, 2, 0.3, 1.0, "wilson", True, "acc", {"label": "safe"})})
        recs = store.records("run1", "arc")
        assert [r.item_id for r in recs] == ["1", "2"] and recs[1].score == 1.0
        assert recs[0].meta == {"label": "safe"} and math.isnan(recs[0].scores["maybe"])
        agg = store.aggregates("run1")["arc"]["acc"]
        assert (agg.value, agg.n, agg.method, agg.where) == (1.0, 2, "wilson", {"label": "safe"})
        assert store.done_items("run1", "arc") == {"1", "2"} and store.count_records("run1") == 2
        store.finish_run("run1")
        summary = store.summary("run1")
        assert summary["status"] == "done" and summary["metrics"]["arc"]["acc"]["value"] == 1.0
    with ResultStore(tmp_path / "r.db") as again:  # persisted
        assert again.start_run("run1", model="m") is True and again.run("run1").status == "running"


def test_run_references(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        with pytest.raises(AlignkitError, match="no eval runs"):
            store.run("latest")
        for rid in ("alpha-1", "alpha-2", "beta-1"):
            store.start_run(rid, model="m")
        assert store.run("latest").run_id == "beta-1" and store.run("latest~2").run_id == "alpha-1"
        assert store.run("beta").run_id == "beta-1"
        with pytest.raises(AlignkitError, match="matches several runs"):
            store.run("alpha")
        with pytest.raises(AlignkitError, match="matches no run"):
            store.run("gamma")
        store.delete_run("beta-1")
        assert store.run("latest").run_id == "alpha-2"


def test_not_a_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_text("this is not sqlite" * 100)
    with pytest.raises(AlignkitError, match="not a usable results database"):
        ResultStore(bad)


def test_json_summary_is_written_atomically(tmp_path):
    path = write_json_atomic({"a": 1, "nan": float("nan")}, tmp_path / "sub" / "s.json")
    assert json.loads(path.read_text().replace("NaN", "null"))["a"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["s.json"]  # no temp file left behind
