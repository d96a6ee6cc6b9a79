"""Pairs in (import) and preference datasets out (export) of an annotation database.

Import reads any preference file the trainers read (through `alignkit.data.load_preferences`: the
chosen reply becomes response 1 and the file's label is kept as a prior to compare people against),
or a generation file: one prompt per row with several sampled responses, e.g.
{"prompt": "...", "completions": ["...", "..."]}, turned into pairs.

Export writes the conversational preference JSONL that `alignkit train dpo`, the reward model and the
judge audit read: {"prompt": [...], "chosen": [...], "rejected": [...]} plus vote counts and agreement.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alignkit.annotate.store import AnnotationStore, PairItem
from alignkit.errors import DataError

__all__ = ["read_pairs", "ImportResult", "export_preferences", "ExportResult", "majority", "RESPONSE_KEYS",
           "PROMPT_KEYS", "atomic_write_lines"]

RESPONSE_KEYS = ("completions", "responses", "samples", "generations", "outputs")
PROMPT_KEYS = ("prompt", "messages", "instruction", "question", "goal", "Behavior")
_TEXT_KEYS = ("text", "content", "response", "completion", "output")


@dataclass
class ImportResult:
    items: list[PairItem]
    layout: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (where, why)


# ---------------------------------------------------------------- import


def read_pairs(spec: str | Path, *, split: str = "train", pairing: Literal["all", "disjoint"] = "all",
               limit: int | None = None, skip_invalid: bool = False) -> ImportResult:
    """Pairs from a preference file or a generation file (detected from the first record)."""
    from alignkit.data import load_preferences
    from alignkit.data.load import _open  # the loaders' reader: JSONL/JSON/CSV/Parquet/directories/hub

    name, rows = _open(spec, split)
    first = next(iter(rows), None)
    if first is not None and isinstance(first[1], dict) and _response_key(first[1]) is not None:
        return _generation_pairs(name, itertools.chain([first], rows), pairing, limit, skip_invalid)
    getattr(rows, "close", lambda: None)()  # release the file; the preference loader reads it again
    loaded = load_preferences(spec, split=split, limit=limit, skip_invalid=skip_invalid)
    items = [PairItem([m.to_dict() for m in p.prompt], [m.to_dict() for m in p.chosen],
                      [m.to_dict() for m in p.rejected], p.source,
                      {"prior_winner": "1", **({"prior_margin": p.margin} if p.margin is not None else {})})
             for p in loaded.records]
    return ImportResult(items, f"preference ({loaded.layout})", list(loaded.skipped))


def _response_key(row: dict) -> str | None:
    return next((k for k in RESPONSE_KEYS if isinstance(row.get(k), list)), None)


def _generation_pairs(name: str, rows: Any, pairing: str, limit: int | None,
                      skip_invalid: bool) -> ImportResult:
    result = ImportResult([], "generation (prompt + sampled responses)")
    for where, row in rows:
        if limit is not None and len(result.items) >= limit:
            break
        try:
            prompt = _prompt(row)
            key = _response_key(row) if isinstance(row, dict) else None
            if key is None:
                raise ValueError(f"no list of responses under any of {', '.join(RESPONSE_KEYS)}")
            replies = _unique([_reply(r, f"{key}[{i}]") for i, r in enumerate(row[key])])
            if len(replies) < 2:
                raise ValueError(f"fewer than 2 distinct responses in {key!r}; nothing to compare")
            pairs = itertools.combinations(range(len(replies)), 2) if pairing == "all" else \
                ((i, i + 1) for i in range(0, len(replies) - 1, 2))
            for i, j in pairs:
                result.items.append(PairItem(prompt, replies[i], replies[j], where, {"responses": [i, j]}))
        except ValueError as err:
            if not skip_invalid:
                raise DataError(where, str(err)) from None
            result.skipped.append((where, str(err)))
    if limit is not None:
        result.items = result.items[:limit]
    if not result.items:
        raise DataError(name, "no pairs found" + (f"; skipped {len(result.skipped)}" if result.skipped else ""))
    return result


def _prompt(row: Any) -> list[dict[str, str]]:
    if not isinstance(row, dict):
        raise ValueError(f"expected an object with named fields, got {type(row).__name__}")
    key = next((k for k in PROMPT_KEYS if k in row), None)
    if key is None:
        raise ValueError(f"no prompt field (one of {', '.join(PROMPT_KEYS)}); found {sorted(map(str, row))}")
    value = row[key]
    if isinstance(value, str) and value.strip():
        return [{"role": "user", "content": value}]
    msgs = _message_list(value, key)
    if msgs[-1]["role"] != "user":
        raise ValueError(f"field {key!r} must end with a user turn, ends with {msgs[-1]['role']!r}")
    return msgs


def _message_list(value: Any, key: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"field {key!r} should be a non-empty string or list of messages")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict) or msg.get("role") not in ("system", "user", "assistant") \
                or not isinstance(msg.get("content"), str):
            raise ValueError(f"field '{key}[{i}]' should be {{\"role\": system|user|assistant, \"content\": str}}")
        out.append({"role": msg["role"], "content": msg["content"]})
    return out


def _reply(value: Any, where: str) -> list[dict[str, str]]:
    if isinstance(value, dict) and "role" not in value:
        value = next((value[k] for k in _TEXT_KEYS if isinstance(value.get(k), str)), None)
        if value is None:
            raise ValueError(f"field {where!r} has no text (one of {', '.join(_TEXT_KEYS)})")
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"field {where!r} is empty")
        return [{"role": "assistant", "content": value}]
    msgs = _message_list(value, where)
    if any(m["role"] != "assistant" for m in msgs):
        raise ValueError(f"field {where!r} must hold assistant messages only")
    return msgs


def _unique(replies: list[list[dict[str, str]]]) -> list[list[dict[str, str]]]:
    seen: list[list[dict[str, str]]] = []
    for r in replies:
        if r not in seen:  # identical samples (greedy decoding) make no comparison
            seen.append(r)
    return seen


# ---------------------------------------------------------------- export


@dataclass
class ExportResult:
    path: Path
    rows: int
    items_judged: int
    dropped: Counter = field(default_factory=Counter)  # reason -> items

    def summary(self) -> str:
        detail = ", ".join(f"{n} {why}" for why, n in self.dropped.most_common())
        return (f"wrote {self.rows} preference rows from {self.items_judged} judged items to {self.path}"
                + (f"; left out {sum(self.dropped.values())} items ({detail})" if detail else ""))


def majority(winners: list[str]) -> tuple[str | None, float]:
    """(winning label or None, its share of the votes): the most-voted label must beat every other."""
    if not winners:
        return None, 0.0
    ranked = Counter(winners).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None, ranked[0][1] / len(winners)
    return ranked[0][0], ranked[0][1] / len(winners)


def _row(item: dict[str, Any], winner: str) -> dict[str, Any]:
    chosen, rejected = ("response1", "response2") if winner == "1" else ("response2", "response1")
    return {"prompt": item["prompt"], "chosen": item[chosen], "rejected": item[rejected]}


def export_preferences(store: AnnotationStore, out: str | Path, *, mode: Literal["majority", "all"] = "majority",
                       min_votes: int = 1, min_agreement: float = 0.0, margin: bool = False) -> ExportResult:
    """Write the preference JSONL atomically (temp file + rename): a reader never sees half a file.

    majority: one row per item whose most-voted label is response 1 or 2 and beats every other label
      (ties and "both bad" included in the count); `agreement` is that label's share of the votes and
      `margin` (optional) is (votes for chosen - votes for rejected) / votes.
    all: one row per A/B vote, with the annotator and the share of the item's votes agreeing with it;
      a pair several people preferred appears several times, which weights it by its votes.
    """
    if mode not in ("majority", "all"):
        raise ValueError(f"mode must be 'majority' or 'all', got {mode!r}")
    items, votes = store.items(), _votes_by_item(store.judgments())
    result = ExportResult(Path(out), 0, len(votes))
    lines = []
    for item_id, judged in votes.items():
        winners = [j["winner"] for j in judged]
        if len(winners) < min_votes:
            result.dropped[f"fewer than {min_votes} votes"] += 1
            continue
        counts = Counter(winners)
        base = {"item_id": item_id, "source": items[item_id]["source"], "votes": len(winners)}
        if mode == "all":
            kept = [j for j in judged
                    if j["winner"] in ("1", "2") and counts[j["winner"]] / len(winners) >= min_agreement]
            if not kept:
                result.dropped["no A/B vote at the agreement threshold"] += 1
            for j in kept:
                lines.append({**_row(items[item_id], j["winner"]), **base, "annotator": j["annotator"],
                              "confidence": j["confidence"], "agreement": counts[j["winner"]] / len(winners)})
            continue
        winner, share = majority(winners)
        if winner is None:
            result.dropped["no majority"] += 1
        elif winner not in ("1", "2"):
            result.dropped[f"majority {winner.replace('_', ' ')}"] += 1
        elif share < min_agreement:
            result.dropped[f"agreement below {min_agreement:g}"] += 1
        else:
            loser = "2" if winner == "1" else "1"
            row = {**_row(items[item_id], winner), **base, "agreement": share,
                   "annotators": [j["annotator"] for j in judged]}
            if margin:
                row["margin"] = (counts[winner] - counts[loser]) / len(winners)
            lines.append(row)
    atomic_write_lines(result.path, (json.dumps(r, ensure_ascii=False) for r in lines))
    result.rows = len(lines)
    return result


def _votes_by_item(judgments: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    by_item: dict[int, list[dict[str, Any]]] = {}
    for j in judgments:
        by_item.setdefault(j["item_id"], []).append(j)
    return by_item


def atomic_write_lines(path: Path, lines: Any) -> None:
    """Temp file in the target's directory, fsync, then os.replace: all of the file or the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
