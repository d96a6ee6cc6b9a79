"""Completion diversity on open-ended prompts: distinct-n and embedding spread across sampled completions.

Safety training can flatten creative output (mode collapse); a capability-tax report should show it.
Per prompt, `samples` completions are drawn at temperature 1.0 (top-p 0.95, seeded); distinct-1/2 count
unique n-grams over all of them, and the embedding spread is the mean pairwise cosine distance of their
all-MiniLM-L6-v2 embeddings. Prompts are alignkit's own (resources/eval_probes.yaml).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from alignkit.evals.metrics import distinct_n
from alignkit.evals.probes.common import probe_data
from alignkit.evals.records import Record
from alignkit.evals.task import EvalContext, Item, Task

if TYPE_CHECKING:
    from alignkit.evals.subject import Subject

__all__ = ["Diversity", "embedding_spread"]


def embedding_spread(texts: list[str]) -> float:
    """Mean pairwise cosine distance (1 - cos) between the texts' sentence embeddings."""
    from alignkit.embeddings import get_embedder

    if len(texts) < 2:
        return 0.0
    emb = get_embedder().encode(texts)  # (k, 384), unit rows
    sims = emb @ emb.T
    k = len(texts)
    return float((k * k - sims.sum()) / (k * (k - 1)))  # diagonal sims are 1 and contribute 0 distance


class Diversity(Task):
    name, group, primary = "diversity", "capability", "distinct_2"
    description = "open-ended prompts, 4 samples each at T=1.0: distinct-1/2 and MiniLM embedding spread"
    samples = 4

    def load(self, ctx: EvalContext) -> list[Item]:
        return [Item(id=f"creative{k}", prompt=p) for k, p in enumerate(probe_data()["diversity_prompts"])]

    def run(self, subject: "Subject", items: list[Item], ctx: EvalContext) -> list[Record]:
        from alignkit.generate.base import SamplingParams

        n = int(ctx.options.get("diversity.samples", self.samples))
        params = SamplingParams(max_tokens=min(ctx.max_new_tokens, 80), temperature=1.0, top_p=0.95, n=n, seed=ctx.seed)
        groups = subject.generate_n([[{"role": "user", "content": i.prompt}] for i in items], params)
        records = []
        for item, group in zip(items, groups):
            texts = [c.text for c in group]
            scores: dict[str, Any] = {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2),
                                      "embedding_spread": embedding_spread(texts)}
            records.append(Record(self.name, item.id, item.prompt, "\n---\n".join(texts), scores["distinct_2"], scores,
                                  tokens=sum(c.tokens for c in group), latency_s=sum(c.latency_s for c in group)))
        return records
