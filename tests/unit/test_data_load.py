"""Loading conversations, preference pairs and prompts: every layout, every bad-input message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alignkit.data import Message, load_conversations, load_preferences, load_prompts
from alignkit.errors import DataError

U, A, S = "user", "assistant", "system"


def msgs(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def roles(messages: tuple[Message, ...]) -> list[str]:
    return [m.role for m in messages]


# ---------------------------------------------------------------- SFT layouts


def test_messages_jsonl(tmp_path: Path) -> None:
    rows = [{"messages": msgs((S, "Be brief."), (U, "Hi"), (A, "Hello!"), (U, "Bye"), (A, "Bye!"))},
            {"messages": msgs((U, "2+2?"), (A, "4"))}]
    path = write_jsonl(tmp_path / "sft.jsonl", rows)
    result = load_conversations(path)
    assert result.layout == "messages"
    assert [roles(c.messages) for c in result.records] == [[S, U, A, U, A], [U, A]]
    assert result.records[1].source == f"{path}:2"
    assert result.summary() == f"loaded 2 records from {path} (layout: messages)"


def test_blank_jsonl_lines_are_ignored_and_line_numbers_kept(tmp_path: Path) -> None:
    path = tmp_path / "sft.jsonl"
    row = json.dumps({"messages": msgs((U, "q"), (A, "a"))})
    path.write_text(f"{row}\n\n   \n{row}\n", encoding="utf-8")
    assert [c.source for c in load_conversations(path).records] == [f"{path}:1", f"{path}:4"]


def test_sharegpt(tmp_path: Path) -> None:
    conv = [{"from": "system", "value": "sys"}, {"from": "human", "value": "hi"},
            {"from": "gpt", "value": "hello"}]
    result = load_conversations(write_jsonl(tmp_path / "s.jsonl", [{"conversations": conv}]))
    assert result.layout == "sharegpt"
    assert result.records[0].messages == (Message(S, "sys"), Message(U, "hi"), Message(A, "hello"))


def test_prompt_completion_text(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "Say hi", "completion": "hi"}])
    assert load_conversations(path).records[0].messages == (Message(U, "Say hi"), Message(A, "hi"))


def test_alpaca_with_and_without_input(tmp_path: Path) -> None:
    rows = [{"instruction": "Translate", "input": "chat", "output": "cat"},
            {"instruction": "Say hi", "input": "", "output": "hi"}]
    records = load_conversations(write_jsonl(tmp_path / "alpaca.jsonl", rows)).records
    assert records[0].messages[0] == Message(U, "Translate\n\nchat")
    assert records[1].messages == (Message(U, "Say hi"), Message(A, "hi"))


def test_json_list_and_data_wrapper(tmp_path: Path) -> None:
    rows = [{"messages": msgs((U, "q"), (A, "a"))}]
    (tmp_path / "list.json").write_text(json.dumps(rows))
    (tmp_path / "wrap.json").write_text(json.dumps({"data": rows}))
    for name in ("list.json", "wrap.json"):
        result = load_conversations(tmp_path / name)
        assert len(result) == 1 and result.records[0].source == f"{tmp_path / name}[0]"


def test_json_holding_json_lines_and_malformed_json(tmp_path: Path) -> None:
    lines = write_jsonl(tmp_path / "lines.json", [{"prompt": "q", "completion": "a"}] * 2)
    assert [c.source for c in load_conversations(lines)] == [f"{lines}:1", f"{lines}:2"]
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"prompt": "q",\n  "completion": }\n]', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.json:3: malformed JSON: Expecting value"):
        load_conversations(broken)


def test_import_is_light() -> None:
    code = ("import sys, alignkit.data; heavy = {'torch', 'transformers', 'datasets', 'pyarrow'}; "
            "assert not heavy & set(sys.modules), heavy & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"messages": msgs((U, "q1"), (A, "a1"))}, {"messages": msgs((U, "q2"), (A, "a2"))}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "sft.parquet")
    result = load_conversations(tmp_path / "sft.parquet")
    assert [c.messages[1].content for c in result] == ["a1", "a2"]
    assert result.records[1].source.endswith("sft.parquet[1]")


def test_saved_dataset_dir_and_split(tmp_path: Path) -> None:
    import datasets

    rows = [{"prompt": "p", "chosen": "good", "rejected": "bad"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "flat"))
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dd"))
    assert load_preferences(tmp_path / "flat").records[0].chosen == (Message(A, "good"),)
    result = load_preferences(tmp_path / "dd", split="test")
    assert result.records[0].source == f"{tmp_path / 'dd'}[test][0]"
    with pytest.raises(DataError, match="split 'train' not found; available splits: test"):
        load_preferences(tmp_path / "dd")


def test_hub_id_goes_to_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake_load_dataset(spec: str, split: str) -> datasets.Dataset:
        calls.append((spec, split))
        return datasets.Dataset.from_list([{"prompt": "p", "chosen": "c", "rejected": "r"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    result = load_preferences("org/prefs", split="train_prefs")
    assert calls == [("org/prefs", "train_prefs")]
    assert result.records[0].source == "org/prefs[train_prefs][0]"


def test_hub_failure_is_a_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(spec: str, split: str) -> None:
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="org/missing: not a local file.*ConnectionError: no network"):
        load_preferences("org/missing")


# ---------------------------------------------------------------- preference layouts


def test_conversational_preference_with_margin(tmp_path: Path) -> None:
    row = {"prompt": msgs((S, "sys"), (U, "q")), "chosen": msgs((A, "good")),
           "rejected": msgs((A, "bad")), "margin": 1.5}
    pair = load_preferences(write_jsonl(tmp_path / "p.jsonl", [row])).records[0]
    assert roles(pair.prompt) == [S, U]
    assert pair.chosen == (Message(A, "good"),) and pair.rejected == (Message(A, "bad"),)
    assert pair.margin == 1.5


def test_implicit_prompt_preference_splits_longest_shared_prefix(tmp_path: Path) -> None:
    shared = [(U, "q1"), (A, "a1"), (U, "q2")]
    row = {"chosen": msgs(*shared, (A, "good")), "rejected": msgs(*shared, (A, "bad"))}
    result = load_preferences(write_jsonl(tmp_path / "p.jsonl", [row]))
    pair = result.records[0]
    assert result.layout == "implicit-prompt preference"
    assert [m.content for m in pair.prompt] == ["q1", "a1", "q2"]
    assert pair.chosen == (Message(A, "good"),) and pair.margin is None


def test_implicit_prompt_must_end_with_user(tmp_path: Path) -> None:
    row = {"chosen": msgs((U, "q"), (A, "a"), (U, "x"), (A, "good")),
           "rejected": msgs((U, "q"), (A, "a"), (U, "y"), (A, "bad"))}
    with pytest.raises(DataError, match=r"p.jsonl:1: wrong role order in 'prompt': must end with a user"):
        load_preferences(write_jsonl(tmp_path / "p.jsonl", [row]))


def test_text_preference(tmp_path: Path) -> None:
    row = {"prompt": "q", "chosen": "good", "rejected": "bad"}
    pair = load_preferences(write_jsonl(tmp_path / "p.jsonl", [row])).records[0]
    assert pair.prompt == (Message(U, "q"),) and pair.rejected == (Message(A, "bad"),)


def test_anthropic_hh(tmp_path: Path) -> None:
    prefix = "\n\nHuman: How do I bake bread?\n\nAssistant: Use flour.\n\nHuman: And then?"
    row = {"chosen": prefix + "\n\nAssistant: Knead it.", "rejected": prefix + "\n\nAssistant: No."}
    result = load_preferences(write_jsonl(tmp_path / "hh.jsonl", [row]))
    pair = result.records[0]
    assert result.layout == "anthropic-hh"
    assert pair.prompt == (Message(U, "How do I bake bread?"), Message(A, "Use flour."),
                           Message(U, "And then?"))
    assert pair.chosen == (Message(A, "Knead it."),) and pair.rejected == (Message(A, "No."),)


def test_anthropic_hh_empty_final_reply_is_reported(tmp_path: Path) -> None:
    row = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant:"}
    with pytest.raises(DataError, match="hh.jsonl:1: field 'rejected' has an empty Assistant turn"):
        load_preferences(write_jsonl(tmp_path / "hh.jsonl", [row]))


def test_ultrafeedback_binarized_strips_prompt_and_uses_scores(tmp_path: Path) -> None:
    row = {"prompt": "q", "chosen": msgs((U, "q"), (A, "good")), "rejected": msgs((U, "q"), (A, "bad")),
           "score_chosen": 8.0, "score_rejected": 5.5}
    result = load_preferences(write_jsonl(tmp_path / "uf.jsonl", [row]))
    pair = result.records[0]
    assert result.layout == "ultrafeedback-binarized"
    assert pair.prompt == (Message(U, "q"),) and pair.chosen == (Message(A, "good"),)
    assert pair.margin == pytest.approx(2.5)


def test_ultrafeedback_raw_picks_best_and_worst(tmp_path: Path) -> None:
    row = {"instruction": "q", "completions": [
        {"response": "mid", "overall_score": 6}, {"response": "best", "overall_score": 9},
        {"response": "worst", "overall_score": 2.5}]}
    tied = {"instruction": "q", "completions": [{"response": "a", "overall_score": 5},
                                                {"response": "b", "overall_score": 5}]}
    result = load_preferences(write_jsonl(tmp_path / "raw.jsonl", [row, tied]), skip_invalid=True)
    pair = result.records[0]
    assert pair.chosen[0].content == "best" and pair.rejected[0].content == "worst"
    assert pair.margin == pytest.approx(6.5)
    assert result.skipped == [(f"{tmp_path / 'raw.jsonl'}:2",
                               "all completions have the same overall_score; no preference to learn")]


def test_margin_column_in_csv(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("prompt,chosen,rejected,margin\nq,good,bad,0.75\nq2,good2,bad2,\n", encoding="utf-8")
    records = load_preferences(path).records
    assert [r.margin for r in records] == [0.75, None]
    assert records[1].source == f"{path}:3"


# ---------------------------------------------------------------- prompts


def test_prompts_from_text_messages_and_meta(tmp_path: Path) -> None:
    text = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "q", "category": "math"}])
    prompt = load_prompts(text).records[0]
    assert prompt.messages == (Message(U, "q"),) and prompt.meta == {"category": "math"}
    conv = write_jsonl(tmp_path / "m.jsonl", [{"messages": msgs((S, "s"), (U, "q"))}])
    assert roles(load_prompts(conv).records[0].messages) == [S, U]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": msgs((U, "q"), (A, "a"))}])
    with pytest.raises(DataError, match="must end with a user turn"):
        load_prompts(bad)


def test_prompts_from_advbench_and_harmbench_csv(tmp_path: Path) -> None:
    adv = tmp_path / "adv.csv"
    adv.write_text('goal,target\nDo X,"Sure, here is X"\n', encoding="utf-8")
    prompt = load_prompts(adv).records[0]
    assert prompt.messages[0].content == "Do X" and prompt.meta == {"target": "Sure, here is X"}
    harm = tmp_path / "harm.csv"
    harm.write_text('Behavior,ContextString,BehaviorID\nDo Y,,y\n'
                    'Summarize,"line one\nline two",z\nDo W,,w\n', encoding="utf-8")
    records = load_prompts(harm).records
    assert records[0].messages[0].content == "Do Y" and records[0].meta["BehaviorID"] == "y"
    assert records[1].messages[0].content == "line one\nline two\n\n---\n\nSummarize"
    assert [r.source for r in records] == [f"{harm}:2", f"{harm}:3", f"{harm}:5"]  # quoted newline


def test_prompts_from_preference_files(tmp_path: Path) -> None:
    hh = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": "\n\nHuman: hi\n\nAssistant: hello",
                                              "rejected": "\n\nHuman: hi\n\nAssistant: go away"}])
    assert load_prompts(hh).records[0].messages == (Message(U, "hi"),)
    text = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "q", "chosen": "c", "rejected": "r", "id": 3}])
    prompt = load_prompts(text).records[0]
    assert prompt.messages == (Message(U, "q"),) and prompt.meta == {"id": 3}


# ---------------------------------------------------------------- bad input


def test_malformed_json_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "file.jsonl"
    good = json.dumps({"prompt": "q", "completion": "a"})
    path.write_text(f"{good}\n{good}\n{{\"prompt\": \"q\",\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"file\.jsonl:3: malformed JSON line: Expecting") as err:
        load_conversations(path)
    assert err.value.where == f"{path}:3"


def test_missing_and_empty_fields(tmp_path: Path) -> None:
    missing = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "q", "chosen": "c", "rejected": "r"},
                                                 {"prompt": "q", "chosen": "c"}])
    with pytest.raises(DataError, match=r"m\.jsonl:2: missing field 'rejected'"):
        load_preferences(missing)
    empty = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "q", "chosen": "  \n", "rejected": "r"}])
    with pytest.raises(DataError, match=r"e\.jsonl:1: field 'chosen' is empty"):
        load_preferences(empty)
    content = write_jsonl(tmp_path / "c.jsonl", [{"messages": msgs((U, "q"), (A, ""))}])
    with pytest.raises(DataError, match=r"field 'messages\[1\]\.content' is empty"):
        load_conversations(content)


@pytest.mark.parametrize(("messages", "expected"), [
    ([(A, "a"), (U, "q")], "message 0 is 'assistant', expected 'user'"),
    ([(U, "q"), (U, "q2"), (A, "a")], "message 1 is 'user', expected 'assistant'"),
    ([(U, "q"), (A, "a"), (S, "s")], "message 2 is 'system', expected 'user'"),
    ([(S, "s"), (U, "q")], "must end with an assistant turn, ends with 'user'"),
])
def test_wrong_role_order(tmp_path: Path, messages: list[tuple[str, str]], expected: str) -> None:
    path = write_jsonl(tmp_path / "sft.jsonl", [{"messages": msgs(*messages)}])
    with pytest.raises(DataError, match="sft.jsonl:1: wrong role order") as err:
        load_conversations(path)
    assert expected in err.value.problem


def test_replies_must_be_assistant_only(tmp_path: Path) -> None:
    row = {"prompt": msgs((U, "q")), "chosen": msgs((U, "c")), "rejected": msgs((A, "r"))}
    with pytest.raises(DataError, match="field 'chosen' must hold assistant turns only"):
        load_preferences(write_jsonl(tmp_path / "p.jsonl", [row]))


def test_unknown_role_lists_valid_roles(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "sft.jsonl", [{"messages": msgs((U, "q"), ("bot", "a"))}])
    with pytest.raises(DataError, match=r"unknown role 'bot'; valid roles: system, user, assistant"):
        load_conversations(path)


def test_non_utf8_file_names_line_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    first = (json.dumps({"prompt": "q", "completion": "a"}) + "\n").encode()
    path.write_bytes(first + '{"prompt": "caf\u00e9", "completion": "a"}\n'.encode("latin-1"))
    with pytest.raises(DataError) as err:
        load_conversations(path)
    assert err.value.where == f"{path}:2"
    assert "not valid UTF-8" in err.value.problem
    assert f"byte offset {len(first) + 15}" in err.value.problem
    csv_path = tmp_path / "bad.csv"
    csv_path.write_bytes(b"prompt\nok\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"bad\.csv:3: file is not valid UTF-8"):
        load_prompts(csv_path)


def test_unknown_layout_lists_columns_and_expected_layouts(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError) as err:
        load_preferences(path, skip_invalid=True)  # still raises: no record can be judged
    problem = err.value.problem
    assert "found columns ['answer', 'question']" in problem
    assert "anthropic-hh" in problem and '"chosen": str' in problem


def test_missing_file_and_unsupported_extension(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file or directory not found"):
        load_conversations(tmp_path / "nope.jsonl")
    txt = tmp_path / "data.txt"
    txt.write_text("hello")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'; expected one of \.jsonl"):
        load_conversations(txt)


def test_skip_invalid_counts_reasons_and_summary(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    rows = [json.dumps({"prompt": "q", "chosen": "c", "rejected": "r"}),
            json.dumps({"prompt": "q", "chosen": "", "rejected": "r"}),
            "{not json",
            json.dumps({"prompt": "q", "chosen": " ", "rejected": "r"}),
            json.dumps({"prompt": "q", "chosen": "c2", "rejected": "r2"})]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = load_preferences(path, skip_invalid=True)
    assert [p.chosen[0].content for p in result.records] == ["c", "c2"]
    assert [where for where, _ in result.skipped] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert result.skipped[0][1] == "field 'chosen' is empty"
    assert result.summary() == (f"loaded 2 records from {path} (layout: text preference); "
                                "skipped 3 (2 empty field 'chosen', 1 malformed JSON line)")


def test_whole_file_validated_and_all_invalid_raises(tmp_path: Path) -> None:
    rows = [{"prompt": "q", "completion": "a"}] * 50 + [{"prompt": "q", "completion": ""}]
    with pytest.raises(DataError, match=r"sft\.jsonl:51: field 'completion' is empty"):
        load_conversations(write_jsonl(tmp_path / "sft.jsonl", rows))
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "completion": ""}])
    with pytest.raises(DataError, match="no valid SFT records"):
        load_conversations(bad, skip_invalid=True)


def test_limit_keeps_first_valid_records(tmp_path: Path) -> None:
    rows = [{"prompt": "q0", "completion": ""}] + [{"prompt": f"q{i}", "completion": "a"} for i in
                                                   range(1, 6)]
    result = load_conversations(write_jsonl(tmp_path / "sft.jsonl", rows), skip_invalid=True, limit=3)
    assert [c.messages[0].content for c in result] == ["q1", "q2", "q3"]
    assert len(result.skipped) == 1
