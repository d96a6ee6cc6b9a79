"""`alignkit label` (and `alignkit cai rl`), read top to bottom in `run_label`:

    config -> judge (generator + constitution) -> items (pairs, or prompts to sample N replies for)
    -> per chunk: [sample N replies] -> judge (both orders, principles ensembled) -> journal
    -> labeled preference JSONL (trainers' format + soft labels) and a summary, written atomically.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from alignkit.config import to_dict
from alignkit.data.builtin import resolve_data
from alignkit.feedback.constitution import load_constitution
from alignkit.feedback.io import Journal, atomic_write_json, atomic_write_jsonl, progress_bar, resolve_prompt_source
from alignkit.feedback.judge import PairwiseJudge, PointwiseJudge
from alignkit.feedback.rlaif import LabelStats, label_pairs, label_samples
from alignkit.feedback.settings import JudgeSettings, LabelConfig
from alignkit.generate.base import Generator, SamplingParams

__all__ = ["build_judge", "make_generator", "run_label", "DEFAULT_POINTWISE_CRITERION", "resolve_source"]

log = logging.getLogger(__name__)

DEFAULT_POINTWISE_CRITERION = ("helpful, honest and harmless: it answers what was asked, says only what is true, "
                               "and declines a harmful request with a brief reason and a safe alternative")
_AUDIT_SET = "feedback_audit_pairs.jsonl"


def resolve_source(spec: str, data_dir: str | None = None) -> str:
    """builtin:feedback-audit -> the packaged labeled set; aliases (advbench...) -> benchmark files."""
    if spec == "builtin:feedback-audit":
        return str(Path(__file__).resolve().parent.parent / "resources" / _AUDIT_SET)
    return resolve_data(resolve_prompt_source(spec, data_dir))


def make_generator(spec: str, *, batch_size: int = 8, device: str = "auto", concurrency: int = 8,
                   cache: dict[str, Generator] | None = None) -> Generator:
    """Build (or reuse from `cache`) the generator a spec names, with the options its backend takes."""
    from alignkit.generate.factory import get_generator

    if cache is not None and spec in cache:
        return cache[spec]
    if spec.startswith(("openai:", "http://", "https://")):
        gen = get_generator(spec, concurrency=concurrency)
    elif spec.startswith("vllm:"):
        gen = get_generator(spec)
    else:
        gen = get_generator(spec, batch_size=batch_size, device=device)
    if cache is not None:
        cache[spec] = gen
    return gen


def build_judge(s: JudgeSettings, *, seed: int = 0,
                cache: dict[str, Generator] | None = None) -> PairwiseJudge | PointwiseJudge:
    """The judge a settings section describes (the constitution is validated before any model loads)."""
    constitution = load_constitution(s.constitution)
    chosen = [constitution.principle(p) for p in s.principles]  # unknown ids fail here, with a suggestion
    gen = make_generator(s.model, batch_size=s.batch_size, device=s.device, concurrency=s.concurrency, cache=cache)
    if s.scoring == "pointwise":
        criterion = s.question or ("; ".join(f"{p.name}: {p.statement}" for p in chosen) or DEFAULT_POINTWISE_CRITERION)
        return PointwiseJudge(gen, criterion, max_response_chars=s.max_response_chars)
    return PairwiseJudge(gen, constitution, principles=s.principles, question=s.question,
                         principles_per_comparison=s.principles_per_comparison, both_orders=s.both_orders,
                         cot=s.cot, cot_max_tokens=s.cot_max_tokens, cot_clamp=(s.cot_clamp[0], s.cot_clamp[1]),
                         max_response_chars=s.max_response_chars, seed=seed)


def _items(cfg: LabelConfig) -> list[tuple[str, Any]]:
    from alignkit.data.load import load_preferences, load_prompts

    if cfg.pairs is not None:
        pairs = load_preferences(resolve_source(cfg.pairs, cfg.data_dir), limit=cfg.limit).records
        return [(f"{i}:{(p.source or '').rsplit('/', 1)[-1]}", p) for i, p in enumerate(pairs)]
    prompts = load_prompts(resolve_source(cfg.prompts or "", cfg.data_dir), limit=cfg.limit).records
    return [(f"{i}:{(p.source or '').rsplit('/', 1)[-1]}", [m.to_dict() for m in p.messages])
            for i, p in enumerate(prompts)]


def _chunk(cfg: LabelConfig, judge: PairwiseJudge | PointwiseJudge, policy: Generator | None,
           chunk: list[tuple[str, Any]]) -> list[tuple[list[dict[str, Any]], LabelStats]]:
    if cfg.pairs is not None:
        if not isinstance(judge, PairwiseJudge):
            raise ValueError("labeling existing pairs needs judge.scoring=pairwise")
        return [([rec] if rec else [], st) for rec, st in label_pairs([p for _, p in chunk], judge, cfg.min_confidence)]
    assert policy is not None
    g = cfg.generation
    params = SamplingParams(max_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p,
                            n=cfg.samples_per_prompt, seed=cfg.seed)
    chats = [c for _, c in chunk]
    replies = [[c.text for c in group] for group in policy.generate(chats, params)]
    return label_samples(chats, replies, judge, cfg.pair_mode, min_margin=cfg.min_margin,
                         min_confidence=cfg.min_confidence)


def run_label(cfg: LabelConfig, *, stage: str = "label") -> dict[str, Any]:
    """Label, journal per chunk, then write `cfg.output` and `<output>.summary.json` atomically."""
    out = Path(cfg.output)
    items = _items(cfg)
    settings = {k: v for k, v in to_dict(cfg).items() if k not in ("fresh", "progress", "batch_size", "chunk_items")}
    settings["judge"] = {k: v for k, v in settings["judge"].items() if k not in ("batch_size", "concurrency", "device")}
    journal = Journal(out.with_name(f".{out.name}.journal"), settings, fresh=cfg.fresh)
    todo = [(k, x) for k, x in items if k not in journal]
    judge: PairwiseJudge | PointwiseJudge | None = None
    policy: Generator | None = None
    cache: dict[str, Generator] = {}
    started = time.perf_counter()
    bar = progress_bar(len(items), stage, cfg.progress, unit="pair" if cfg.pairs else "prompt")
    bar.update(len(items) - len(todo))
    try:
        for s in range(0, len(todo), cfg.chunk_items):
            chunk = todo[s : s + cfg.chunk_items]
            if judge is None:  # models load only when work is left
                judge = build_judge(cfg.judge, seed=cfg.seed, cache=cache)
                if cfg.policy:
                    policy = make_generator(cfg.policy, batch_size=cfg.batch_size, device=cfg.judge.device, cache=cache)
            results = _chunk(cfg, judge, policy, chunk)
            journal.add((k, {"records": recs, "stats": st.raw()}) for (k, _), (recs, st) in zip(chunk, results))
            bar.update(len(chunk))
    finally:
        bar.close()
    return _finish(cfg, out, [journal.done[k] for k, _ in items], time.perf_counter() - started, len(todo))


def _finish(cfg: LabelConfig, out: Path, done: list[dict[str, Any]], seconds: float, new: int) -> dict[str, Any]:
    records = [r for entry in done for r in entry["records"]]
    stats = LabelStats()
    for entry in done:
        stats.merge(LabelStats(**entry["stats"]))
    soft = [r["p_chosen"] for r in records if "p_chosen" in r]
    summary = {"items": len(done), "labeled_this_run": new, "records": len(records), **stats.as_dict(),
               "mean_p_chosen": round(sum(soft) / len(soft), 4) if soft else None, "seconds": round(seconds, 1),
               "output": str(out), "config": to_dict(cfg)}
    atomic_write_jsonl(out, records)
    atomic_write_json(out.with_name(out.stem + ".summary.json"), summary)
    return summary
