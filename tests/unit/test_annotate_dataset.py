"""Import (preference and generation files), export (majority / all votes) and the CLI around them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from random import Random

import pytest

from alignkit.annotate import AnnotationStore, export_preferences, read_pairs
from alignkit.annotate.stats import compute_stats, format_stats
from alignkit.cli import main
from alignkit.data import load_preferences
from alignkit.errors import DataError


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_read_pairs_from_a_preference_file_keeps_the_label_as_prior(pref_file):
    result = read_pairs(pref_file)
    assert len(result.items) == 24 and result.layout.startswith("preference")
    item = result.items[0]
    assert item.prompt[0]["role"] == "user" and "Sure" in item.response1[0]["content"]
    assert item.meta["prior_winner"] == "1" and item.source.endswith("prefs.jsonl:1")


def test_read_pairs_from_a_generation_file(tmp_path):
    rows = [
        {"prompt": "Name a colour.", "completions": ["Red.", {"text": "Blue."}, "Red.", [{"role": "assistant", "content": "Green."}]]},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
         "responses": [{"content": "Hello."}, {"content": "Hey."}]},
    ]
    path = _jsonl(tmp_path / "gen.jsonl", rows)
    all_pairs = read_pairs(path)
    assert all_pairs.layout.startswith("generation")
    # 3 distinct replies (a duplicate "Red." dropped) -> 3 pairs, plus 1 pair from the second row
    assert len(all_pairs.items) == 4
    assert all_pairs.items[-1].prompt[0] == {"role": "system", "content": "Be brief."}
    assert [i.response2[0]["content"] for i in all_pairs.items[:3]] == ["Blue.", "Green.", "Green."]
    assert len(read_pairs(path, pairing="disjoint").items) == 2  # (Red, Blue) and (Hello, Hey)
    assert len(read_pairs(path, limit=2).items) == 2


def test_read_pairs_names_the_bad_record(tmp_path):
    path = _jsonl(tmp_path / "gen.jsonl", [{"prompt": "Q", "completions": ["a", "b"]},
                                           {"prompt": "Q2", "completions": ["only one"]}])
    with pytest.raises(DataError, match=r"gen\.jsonl:2: fewer than 2 distinct responses"):
        read_pairs(path)
    assert len(read_pairs(path, skip_invalid=True).items) == 1
    with pytest.raises(DataError, match="unknown column layout"):
        read_pairs(_jsonl(tmp_path / "x.jsonl", [{"foo": 1}]))


def _judged_store(tmp_path: Path, pref_file: Path) -> AnnotationStore:
    """3 items x 3 annotators, votes in item terms: item1 1,1,2 / item2 2,2,2 / item3 1,2,tie."""
    store = AnnotationStore(tmp_path / "a.db", overlap=3, rng=Random(1))
    store.add_items(read_pairs(pref_file, limit=3).items)
    plan = {1: ["1", "1", "2"], 2: ["2", "2", "2"], 3: ["1", "2", "tie"]}
    for k, name in enumerate(["ann", "bea", "cal"]):
        store.set_annotator(name)
        with sqlite3.connect(store.path) as db:
            aid = db.execute("SELECT id FROM annotators WHERE name = ?", (name,)).fetchone()[0]
        while (task := store.current(aid)) is not None:
            want = plan[task.item_id][k]
            choice = want if want == "tie" else ("A" if task.shown_order[0] == want else "B")
            store.judge(aid, task.assignment_id, choice, confidence=2)
    return store


def test_export_majority_is_read_by_the_trainers_loader(tmp_path, pref_file):
    store = _judged_store(tmp_path, pref_file)
    out = tmp_path / "out" / "human.jsonl"
    result = export_preferences(store, out, margin=True)
    assert result.rows == 2 and result.dropped == {"no majority": 1}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    items = store.items()
    assert rows[0]["chosen"] == items[1]["response1"] and rows[0]["agreement"] == pytest.approx(2 / 3)
    assert rows[0]["margin"] == pytest.approx(1 / 3)  # (2 - 1) / 3
    assert rows[1]["chosen"] == items[2]["response2"] and rows[1]["agreement"] == 1.0
    pairs = load_preferences(out)  # the file DPO, the reward model and the judge audit read
    assert len(pairs) == 2 and pairs.records[0].margin == pytest.approx(1 / 3)
    assert not list(out.parent.glob(".*"))  # no temp file left behind
    strict = export_preferences(store, tmp_path / "strict.jsonl", min_agreement=0.9)
    assert strict.rows == 1 and strict.dropped["agreement below 0.9"] == 1


def test_export_all_votes_with_agreement(tmp_path, pref_file):
    store = _judged_store(tmp_path, pref_file)
    out = tmp_path / "all.jsonl"
    result = export_preferences(store, out, mode="all")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert result.rows == len(rows) == 8  # 9 votes minus the tie
    assert sorted(r["agreement"] for r in rows if r["item_id"] == 3) == [pytest.approx(1 / 3)] * 2
    assert {r["annotator"] for r in rows} == {"ann", "bea", "cal"}
    assert len(load_preferences(out)) == 8


def test_stats_on_known_votes(tmp_path, pref_file):
    store = _judged_store(tmp_path, pref_file)
    s = compute_stats(store)
    assert (s["items"], s["items_complete"], s["judgments"]) == (3, 3, 9)
    # Fleiss over the 3 items with labels (1, 2, tie): rows [2,1,0], [0,3,0], [1,1,1]
    # P_i = 1/3, 1, 0 -> P_bar = 4/9; p = (3/9, 5/9, 1/9) -> P_e = 35/81; kappa = (36/81 - 35/81)/(46/81) = 1/46
    assert s["fleiss_kappa"] == pytest.approx(1 / 46)
    pair = next(c for c in s["cohen"] if (c["a"], c["b"]) == ("ann", "bea"))
    # ann: 1, 2, 1; bea: 1, 2, 2 -> p_o = 2/3; p_e = (2*1 + 1*2)/9 = 4/9; kappa = (2/9)/(5/9) = 0.4
    assert pair["kappa"] == pytest.approx(0.4) and pair["shared_items"] == 3
    ann = next(a for a in s["annotators"] if a["name"] == "ann")
    assert ann["judged"] == 3 and ann["agree_with_prior"] == pytest.approx(2 / 3)
    assert 0 <= ann["share_a"] <= 1 and ann["position_p"] is not None
    text = format_stats(s)
    assert "Fleiss' kappa: 0.022" in text and "ann / bea" in text


def test_cli_import_token_stats_export(tmp_path, pref_file, capsys):
    db = tmp_path / "cli.db"
    assert main(["annotate", "import", str(pref_file), "--db", str(db), "--limit", "5"]) == 0
    assert "5 new" in capsys.readouterr().out
    assert main(["annotate", "import", str(pref_file), "--db", str(db), "--limit", "5"]) == 0
    assert "0 new, 5 already" in capsys.readouterr().out
    assert main(["annotate", "token", "zoe", "--admin", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    token = lines[0].split(": ")[1]
    store = AnnotationStore(db)
    assert store.annotator_for(token)[1] == "zoe" and store.is_admin(lines[1].split(": ")[1])
    assert main(["annotate", "stats", "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == 5
    assert main(["annotate", "export", str(tmp_path / "o.jsonl"), "--db", str(db)]) == 0
    assert "wrote 0 preference rows" in capsys.readouterr().out
    assert main(["annotate", "stats", "--db", str(tmp_path / "missing.db")]) == 2
    assert "annotation database not found" in capsys.readouterr().err
    assert main(["annotate", "import", str(tmp_path / "nope.jsonl"), "--db", str(db)]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["annotate"], ["annotate", "serve"], ["annotate", "export"], ["annotate", "stats"]])
def test_annotate_help_has_examples_and_loads_no_web_framework(args):
    import subprocess
    import sys

    code = ("import sys; from alignkit.cli import main\n"
            "try: main([*sys.argv[1:], '--help'])\n"
            "except SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'fastapi', 'uvicorn', 'markdown_it') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "examples:" in out.stdout and "alignkit annotate" in out.stdout
