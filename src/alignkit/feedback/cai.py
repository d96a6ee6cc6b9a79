"""Constitutional AI, supervised stage (Bai et al. 2022) and context distillation.

SL stage, read top to bottom in `run_sl`:
    red-team prompt -> initial response
    for round in 1..k:  principle (fresh each round) -> critique request -> critique
                        -> revision request -> revision (the next round critiques this one)
    outputs: records.jsonl (the whole trace, the principle that drove each revision), sft.jsonl
             (prompt + final revision, the SFT format) and prefs.jsonl (final revision chosen over the
             initial response, the DPO format), summary.json.

All prompts of a chunk move through a round together, so every generation call is batched. Each finished
chunk is journaled (resume); the outputs are written atomically at the end.

Context distillation (`run_distill`): generate with the constitution as the system prompt and save the
conversation without it, so training bakes the prompt's behaviour into the weights.

The RL stage's preference labels come from the judge (`alignkit cai rl` = `alignkit label` with the
constitution's principles ensembled per comparison; see rlaif.py).
"""

from __future__ import annotations

import logging
import random
import re
import time
from pathlib import Path
from typing import Any, Sequence

from alignkit.config import to_dict
from alignkit.feedback.constitution import Constitution, Principle, load_constitution
from alignkit.feedback.io import Journal, atomic_write_json, atomic_write_jsonl, progress_bar, resolve_prompt_source
from alignkit.feedback.rlaif import preference_record
from alignkit.feedback.settings import CAIConfig, DistillConfig, GenerationSettings
from alignkit.generate.base import Chat, Generator, SamplingParams

__all__ = ["run_sl", "run_distill", "sl_rounds", "critique_chat", "revision_chat", "clean_revision",
           "draw_principles", "load_prompt_chats"]

log = logging.getLogger(__name__)

# settings that change speed or display, not the data: a resumed run may change them freely
_NOT_OUTPUT_SETTINGS = ("fresh", "progress", "batch_size", "device", "chunk_prompts")
_ONLY_REVISION = "Reply with the rewritten response only, without any preface or commentary."
_HERE_PREFACE = re.compile(r"^(?:\*\*)?here(?:'s| is)[^:\n]{0,60}\b(?:response|revision|answer|version)\b[^:\n]{0,40}:"
                           r"\s*(?:\*\*)?\s*", re.IGNORECASE)
_PREFACE = re.compile(r"^\s*(?:\*\*)?(?:here(?:'s| is) (?:the|a|my) )?(?:revised|rewritten|new|improved|final)?\s*"
                      r"(?:response|revision|answer|version)\s*(?:\*\*)?\s*[:\-]\s*(?:\*\*)?\s*", re.IGNORECASE)


def draw_principles(pool: Sequence[Principle], rounds: int, rng: random.Random) -> list[Principle]:
    """`rounds` principles, none repeated until the pool is used up (fresh principles each round)."""
    out: list[Principle] = []
    while len(out) < rounds:
        batch = list(pool)
        rng.shuffle(batch)
        out.extend(batch[: rounds - len(out)])
    return out


def critique_chat(prompt: Chat, response: str, principle: Principle) -> list[dict[str, str]]:
    return [*map(dict, prompt), {"role": "assistant", "content": response},
            {"role": "user", "content": principle.critique}]


def revision_chat(prompt: Chat, response: str, principle: Principle, critique: str) -> list[dict[str, str]]:
    return [*critique_chat(prompt, response, principle), {"role": "assistant", "content": critique},
            {"role": "user", "content": f"{principle.revision} {_ONLY_REVISION}"}]


def clean_revision(text: str) -> str:
    """Strip the prefaces small models put before a rewrite ("Revised response:", "Here's a rewritten
    version of the response:") and wrapping quotes."""
    text = _HERE_PREFACE.sub("", text.strip(), count=1).strip()
    text = _PREFACE.sub("", text, count=1).strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def _same(a: str, b: str, prefix_chars: int = 80) -> bool:
    """The revision opens like the critique (the model restated its critique instead of rewriting)."""
    a, b = " ".join(a.split()).lower(), " ".join(b.split()).lower()
    return a[:prefix_chars] == b[:prefix_chars]


def _params(g: GenerationSettings, seed: int) -> SamplingParams:
    return SamplingParams(max_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p, seed=seed)


def _texts(gen: Generator, chats: list[list[dict[str, str]]], params: SamplingParams) -> list[str]:
    return [group[0].text for group in gen.generate(chats, params)] if chats else []


def sl_rounds(policy: Generator, critic: Generator, prompts: Sequence[Chat], pool: Sequence[Principle],
              cfg: CAIConfig, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """Initial responses, then `cfg.rounds` critique -> revision rounds, batched across `prompts`."""
    current = _texts(policy, [list(map(dict, p)) for p in prompts], _params(cfg.response, cfg.seed))
    records = [{"initial": r, "rounds": []} for r in current]
    drawn = [draw_principles(pool, cfg.rounds, random.Random(s)) for s in seeds]
    for k in range(cfg.rounds):
        principles = [d[k] for d in drawn]
        critiques = _texts(critic, [critique_chat(p, r, pr) for p, r, pr in zip(prompts, current, principles)],
                           _params(cfg.critique, cfg.seed + k + 1))
        revisions = _texts(critic, [revision_chat(p, r, pr, c) for p, r, pr, c
                                    in zip(prompts, current, principles, critiques)],
                           _params(cfg.revision, cfg.seed + k + 1))
        for i, (pr, crit, rev) in enumerate(zip(principles, critiques, revisions)):
            cleaned = clean_revision(rev)
            records[i]["rounds"].append({"round": k + 1, "principle": pr.id, "critique_request": pr.critique,
                                         "critique": crit, "revision_request": pr.revision, "revision": cleaned,
                                         "revision_empty": not cleaned,
                                         "revision_repeats_critique": bool(cleaned) and _same(cleaned, crit)})
            current[i] = cleaned or current[i]  # an empty rewrite keeps the previous text
    for rec, final in zip(records, current):
        rec["final"] = final
        rec["principles"] = [r["principle"] for r in rec["rounds"]]
    return records


def load_prompt_chats(spec: str, data_dir: str | None, limit: int | None) -> list[tuple[str, list[dict[str, str]]]]:
    """(id, chat) for each prompt; the id (source location) keys the resume journal."""
    from alignkit.data.load import load_prompts

    loaded = load_prompts(resolve_prompt_source(spec, data_dir), limit=limit)
    # "harmful_behaviors.csv:17": the file name and line, so a moved data directory still resumes
    return [((p.source or str(i)).rsplit("/", 1)[-1], [m.to_dict() for m in p.messages])
            for i, p in enumerate(loaded.records)]


def _pool(constitution: Constitution, ids: Sequence[str]) -> list[Principle]:
    return [constitution.principle(i) for i in ids] if ids else list(constitution.principles)


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _seed_of(cfg_seed: int, key: str) -> int:
    # per-prompt seeds derived from the id: a resumed run draws the same principles as an unbroken one
    return random.Random(f"{cfg_seed}:{key}").randrange(2**31)


def _build(spec: str, batch_size: int, device: str) -> Generator:
    from alignkit.generate.factory import get_generator

    if spec.startswith(("openai:", "http://", "https://", "vllm:")):
        return get_generator(spec)  # remote/vLLM backends batch on their own side
    return get_generator(spec, batch_size=batch_size, device=device)


def run_sl(cfg: CAIConfig) -> dict[str, Any]:
    """The SL-CAI data run; returns the summary (also written to summary.json)."""
    out = Path(cfg.output_dir)
    constitution = load_constitution(cfg.constitution)
    pool = _pool(constitution, cfg.principles)
    items = load_prompt_chats(cfg.prompts, cfg.data_dir, cfg.limit)
    settings = {k: v for k, v in to_dict(cfg).items() if k not in _NOT_OUTPUT_SETTINGS}
    settings["constitution_version"] = f"{constitution.name}@{constitution.version}"
    journal = Journal(out / ".journal-sl.jsonl", settings, fresh=cfg.fresh)
    todo = [(key, chat) for key, chat in items if key not in journal]
    started, policy, critic = time.perf_counter(), None, None
    bar = progress_bar(len(items), "cai sl", cfg.progress, unit="prompt")
    bar.update(len(items) - len(todo))
    try:
        for chunk in _chunks(todo, cfg.chunk_prompts):
            if policy is None:  # load only when something is left to do
                policy = _build(cfg.model, cfg.batch_size, cfg.device)
                critic = _build(cfg.critic, cfg.batch_size, cfg.device) if cfg.critic else policy
            seeds = [_seed_of(cfg.seed, k) for k, _ in chunk]
            recs = sl_rounds(policy, critic, [c for _, c in chunk], pool, cfg, seeds)
            journal.add((key, {"id": key, "prompt": chat, **rec}) for (key, chat), rec in zip(chunk, recs))
            bar.update(len(chunk))
    finally:
        bar.close()
    records = [journal.done[key] for key, _ in items]
    return _write_sl(out, cfg, constitution, records, time.perf_counter() - started, len(todo))


def _write_sl(out: Path, cfg: CAIConfig, constitution: Constitution, records: list[dict[str, Any]],
              seconds: float, generated: int) -> dict[str, Any]:
    sft = [{"messages": r["prompt"] + [{"role": "assistant", "content": r["final"]}],
            "principles": r["principles"], "source": r["id"]} for r in records if r["final"].strip()]
    prefs = [preference_record(r["prompt"], r["final"], r["initial"], principles=r["principles"], source=r["id"])
             for r in records if r["final"].strip() and r["final"].strip() != r["initial"].strip()]
    used: dict[str, int] = {}
    for r in records:
        for p in r["principles"]:
            used[p] = used.get(p, 0) + 1
    summary = {
        "prompts": len(records), "generated_this_run": generated, "rounds": cfg.rounds, "sft_rows": len(sft),
        "preference_pairs": len(prefs), "unchanged_after_revision": len(records) - len(prefs),
        "empty_revisions": sum(x["revision_empty"] for r in records for x in r["rounds"]),
        "revisions_repeating_critique": sum(x.get("revision_repeats_critique", False)
                                            for r in records for x in r["rounds"]),
        "principles_used": dict(sorted(used.items(), key=lambda kv: -kv[1])), "seconds": round(seconds, 1),
        "constitution": f"{constitution.name}@{constitution.version}", "config": to_dict(cfg),
        "files": {name: str(out / f"{name}.jsonl") for name in ("records", "sft", "prefs")},
    }
    atomic_write_jsonl(out / "records.jsonl", records)
    atomic_write_jsonl(out / "sft.jsonl", sft)
    atomic_write_jsonl(out / "prefs.jsonl", prefs)
    atomic_write_json(out / "summary.json", summary)
    return summary


def run_distill(cfg: DistillConfig) -> dict[str, Any]:
    """Context distillation data: replies generated under the constitution's system prompt, saved without it."""
    out = Path(cfg.output_dir)
    constitution = load_constitution(cfg.constitution)
    system = constitution.system_prompt(include_hazards=cfg.include_hazards)
    items = load_prompt_chats(cfg.prompts, cfg.data_dir, cfg.limit)
    settings = {k: v for k, v in to_dict(cfg).items() if k not in _NOT_OUTPUT_SETTINGS}
    settings["system_prompt"] = system
    journal = Journal(out / ".journal-distill.jsonl", settings, fresh=cfg.fresh)
    todo = [(k, c) for k, c in items if k not in journal]
    started, policy = time.perf_counter(), None
    params = _params(cfg.generation, cfg.seed)
    bar = progress_bar(len(items), "cai distill", cfg.progress, unit="prompt")
    bar.update(len(items) - len(todo))
    try:
        for chunk in _chunks(todo, cfg.chunk_prompts):
            policy = policy or _build(cfg.model, cfg.batch_size, cfg.device)
            chats = [[m for m in c if m["role"] != "system"] for _, c in chunk]  # ours replaces any system turn
            guided = _texts(policy, [[{"role": "system", "content": system}, *c] for c in chats], params)
            plain = _texts(policy, chats, params) if cfg.pairs else [""] * len(chats)
            journal.add((k, {"id": k, "prompt": c, "guided": g, "plain": p})
                        for (k, _), c, g, p in zip(chunk, chats, guided, plain))
            bar.update(len(chunk))
    finally:
        bar.close()
    records = [journal.done[k] for k, _ in items]
    sft = [{"messages": r["prompt"] + [{"role": "assistant", "content": r["guided"]}], "source": r["id"]}
           for r in records if r["guided"].strip()]
    atomic_write_jsonl(out / "sft.jsonl", sft)
    summary: dict[str, Any] = {"prompts": len(records), "sft_rows": len(sft), "generated_this_run": len(todo),
                               "seconds": round(time.perf_counter() - started, 1), "system_prompt_chars": len(system),
                               "constitution": f"{constitution.name}@{constitution.version}", "config": to_dict(cfg)}
    if cfg.pairs:
        prefs = [preference_record(r["prompt"], r["guided"], r["plain"], source=r["id"], kind="context_distillation")
                 for r in records if r["guided"].strip() and r["guided"].strip() != r["plain"].strip()]
        atomic_write_jsonl(out / "prefs.jsonl", prefs)
        summary["preference_pairs"] = len(prefs)
    atomic_write_json(out / "summary.json", summary)
    return summary

