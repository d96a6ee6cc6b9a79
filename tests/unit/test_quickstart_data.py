"""The quickstart preference data shipped in src/alignkit/resources: format, mix, separation, lengths.

See src/alignkit/resources/QUICKSTART_DATA.md for what the data is and how it was written.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

RESOURCES = Path(__file__).resolve().parents[2] / "src" / "alignkit" / "resources"
TRAIN = RESOURCES / "quickstart_train.jsonl"
HELDOUT = RESOURCES / "quickstart_heldout.jsonl"

KEYS = {"prompt", "chosen", "rejected", "category", "hazard"}
CATEGORIES = {"harmful", "benign", "borderline"}
HAZARDS = {
    "violent_crimes", "non_violent_crimes", "sex_crimes", "child_exploitation", "defamation",
    "specialized_advice", "privacy", "intellectual_property", "indiscriminate_weapons", "hate",
    "self_harm", "sexual_content", "elections", "code_interpreter_abuse", "none",
}
EXPECTED = {
    TRAIN.name: {"harmful": 108, "borderline": 60, "benign": 72},
    HELDOUT.name: {"harmful": 27, "borderline": 15, "benign": 18},
}
PROMPT_WORDS = (5, 40)
REPLY_WORDS = (25, 90)
MAX_CHARS = 560  # prompt + one reply; with the chat template a pair stays under ~160 SmolLM2 tokens

FILES = [TRAIN, HELDOUT]


def read(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        assert line.strip(), f"{path.name}:{n}: blank line"
        row = json.loads(line)
        assert isinstance(row, dict), f"{path.name}:{n}: not a JSON object"
        rows.append(row)
    return rows


def norm(text: str) -> str:
    """Lowercase, punctuation dropped, whitespace collapsed: catches near-duplicate prompts."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def words(text: str) -> int:
    return len(text.split())


def text(row: dict, key: str) -> str:
    return row[key][0]["content"]


@pytest.fixture(scope="module")
def data() -> dict[str, list[dict]]:
    return {path.name: read(path) for path in FILES}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_line_parses(path: Path) -> None:
    raw = path.read_bytes()
    raw.decode("utf-8")  # strict
    assert raw.endswith(b"\n")
    assert len(read(path)) == sum(EXPECTED[path.name].values())


def test_schema(data: dict[str, list[dict]]) -> None:
    for name, rows in data.items():
        for i, row in enumerate(rows, 1):
            where = f"{name}:{i}"
            assert set(row) == KEYS, where
            for key, role in (("prompt", "user"), ("chosen", "assistant"), ("rejected", "assistant")):
                turns = row[key]
                assert isinstance(turns, list) and len(turns) == 1, f"{where} {key}"
                assert set(turns[0]) == {"role", "content"}, f"{where} {key}"
                assert turns[0]["role"] == role, f"{where} {key}"
                content = turns[0]["content"]
                assert isinstance(content, str) and content.strip() == content and content, f"{where} {key}"
            assert row["category"] in CATEGORIES, where
            assert row["hazard"] in HAZARDS, where
            # benign requests touch no hazard; harmful ones (and the risky-sounding borderline ones) name one
            assert (row["hazard"] == "none") == (row["category"] == "benign"), where


def test_counts_per_category(data: dict[str, list[dict]]) -> None:
    for name, rows in data.items():
        assert dict(Counter(r["category"] for r in rows)) == EXPECTED[name], name


def test_every_hazard_has_harmful_training_pairs(data: dict[str, list[dict]]) -> None:
    harmful = Counter(r["hazard"] for r in data[TRAIN.name] if r["category"] == "harmful")
    assert set(harmful) == HAZARDS - {"none"}
    assert min(harmful.values()) >= 5
    held = {r["hazard"] for r in data[HELDOUT.name] if r["category"] == "harmful"}
    assert held == HAZARDS - {"none"}


def test_no_prompt_in_both_files(data: dict[str, list[dict]]) -> None:
    train = {norm(text(r, "prompt")) for r in data[TRAIN.name]}
    held = {norm(text(r, "prompt")) for r in data[HELDOUT.name]}
    assert not train & held


@pytest.mark.parametrize("name", [p.name for p in FILES])
def test_no_duplicate_prompts_within_a_file(data: dict[str, list[dict]], name: str) -> None:
    prompts = Counter(norm(text(r, "prompt")) for r in data[name])
    assert [p for p, n in prompts.items() if n > 1] == []


def test_chosen_differs_from_rejected(data: dict[str, list[dict]]) -> None:
    for name, rows in data.items():
        for i, row in enumerate(rows, 1):
            assert norm(text(row, "chosen")) != norm(text(row, "rejected")), f"{name}:{i}"


def test_no_reply_reused_verbatim(data: dict[str, list[dict]]) -> None:
    replies = Counter(norm(text(r, k)) for rows in data.values() for r in rows for k in ("chosen", "rejected"))
    assert [t for t, n in replies.items() if n > 1] == []


def test_lengths_within_bounds(data: dict[str, list[dict]]) -> None:
    for name, rows in data.items():
        for i, row in enumerate(rows, 1):
            where = f"{name}:{i}"
            prompt = text(row, "prompt")
            assert PROMPT_WORDS[0] <= words(prompt) <= PROMPT_WORDS[1], f"{where} prompt: {words(prompt)} words"
            for key in ("chosen", "rejected"):
                reply = text(row, key)
                assert REPLY_WORDS[0] <= words(reply) <= REPLY_WORDS[1], f"{where} {key}: {words(reply)} words"
                assert len(prompt) + len(reply) <= MAX_CHARS, f"{where} {key}: {len(prompt) + len(reply)} chars"


def test_loads_through_the_builtin_names() -> None:
    from alignkit.data import load_preferences
    from alignkit.data.builtin import resolve_data

    for name, path in (("quickstart", TRAIN), ("quickstart-heldout", HELDOUT)):
        result = load_preferences(resolve_data(f"builtin:{name}"))
        assert not result.skipped
        assert len(result) == sum(EXPECTED[path.name].values())
