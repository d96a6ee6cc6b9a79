"""The model under test: generation through any `Generator`, log-likelihoods through `LoglikScorer`.

A local model gets both. A remote generator (OpenAI-compatible endpoint) only generates; multiple-choice
tasks then fail with a clear message instead of silently scoring something else.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from alignkit.errors import ModelError

if TYPE_CHECKING:
    from alignkit.evals.loglik import LoglikRequest, LoglikResult, LoglikScorer
    from alignkit.generate.base import Chat, Completion, Generator, SamplingParams

__all__ = ["Subject"]


class Subject:
    """What an eval talks to. `calls` counts model calls (generate + loglikelihood), e.g. to test resume."""

    def __init__(self, generator: "Generator", *, name: str | None = None, scorer: "LoglikScorer | None" = None,
                 source: str = "") -> None:
        self.generator = generator
        self.scorer = scorer
        self.name = name or getattr(generator, "name", "model")
        self.source = source
        self.calls = 0
        self.generated_tokens = 0
        self.generate_seconds = 0.0

    @classmethod
    def load(cls, model: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 16,
             row_tokens: int = 256, tokens_per_batch: int = 4096, generation_dtype: str = "fp32") -> "Subject":
        """Load a local model (built-in name, directory, hub id, .gguf; log-likelihood and generation) or a
        remote backend spec (openai:URL::MODEL, vllm:MODEL; generation only)."""
        from alignkit.models.load import ModelConfig, load_model

        if model.startswith(("openai:", "http://", "https://", "vllm:")):
            from alignkit.generate.factory import get_generator

            return cls(get_generator(model), name=model, scorer=None, source=model)
        model = model[len("local:"):] if model.startswith("local:") else model

        loaded = load_model(ModelConfig(name=model, device=device, dtype=dtype), for_training=False)  # type: ignore[arg-type]
        return cls.from_model(loaded.model, loaded.tokenizer, name=model, source=loaded.source, batch_size=batch_size,
                              row_tokens=row_tokens, tokens_per_batch=tokens_per_batch,
                              generation_dtype=generation_dtype)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, name: str = "local", source: str = "", batch_size: int = 16,
                   row_tokens: int = 256, tokens_per_batch: int = 4096, generation_dtype: str = "fp32") -> "Subject":
        """`generation_dtype="fp32"` (the default for evals) decodes with the model as loaded. "auto" lets the
        generator decode with a bf16 copy on AMX CPUs: faster, but greedy outputs then depend on the batch
        size (SmolLM2, 16 XSTest prompts: 3 of 16 identical between batch 1 and 16, vs 16 of 16 in fp32)."""
        from alignkit.evals.loglik import LoglikScorer
        from alignkit.generate.local import LocalGenerator

        generator = LocalGenerator(model, tokenizer, name=name, batch_size=batch_size,
                                   generation_dtype=generation_dtype)
        scorer = LoglikScorer(model, tokenizer, row_tokens=row_tokens, tokens_per_batch=tokens_per_batch)
        return cls(generator, name=name, scorer=scorer, source=source)

    def render_chat(self, messages: Sequence[dict[str, str]], *, assistant_prefix: str = "") -> str:
        """The chat as the model sees it, ending in an open assistant turn (+ `assistant_prefix`), for
        log-likelihood probes that score what the assistant would say next."""
        tokenizer = getattr(self.generator, "tokenizer", None)
        if tokenizer is None or self.scorer is None:
            raise ModelError(f"{self.name}: chat log-likelihood probes need a local model with a chat template")
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return text + assistant_prefix

    def loglikelihood(self, requests: Sequence["LoglikRequest"]) -> list["LoglikResult"]:
        if self.scorer is None:
            raise ModelError(f"{self.name}: multiple-choice (log-likelihood) tasks need a local model; this "
                             "backend only generates. Run generation tasks only (e.g. --suite safety).")
        self.calls += 1
        return self.scorer.score(requests)

    def generate(self, chats: Sequence["Chat"], params: "SamplingParams") -> list["Completion"]:
        """The first completion per chat; chats are sent sorted by length so batches pad little."""
        return [group[0] for group in self.generate_n(chats, params)]

    def generate_n(self, chats: Sequence["Chat"], params: "SamplingParams") -> list[list["Completion"]]:
        if not chats:
            return []
        self.calls += 1
        order = sorted(range(len(chats)), key=lambda i: -sum(len(m["content"]) for m in chats[i]))
        start = time.perf_counter()
        out = self.generator.generate([chats[i] for i in order], params)
        seconds = time.perf_counter() - start
        result: list[list["Completion"]] = [[] for _ in chats]
        for i, group in zip(order, out):
            for c in group:
                c.latency_s = seconds / len(chats)  # model time per item (the batch shares it)
            result[i] = group
        self.generated_tokens += sum(c.tokens for g in out for c in g)
        self.generate_seconds += seconds
        return result
