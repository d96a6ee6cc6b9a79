"""Local transformers generation: batched, left-padded, KV cache, CPU or GPU."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Sequence

from alignkit.generate.base import Chat, Completion, SamplingParams

__all__ = ["LocalGenerator", "generate_local"]

log = logging.getLogger(__name__)


class LocalGenerator:
    """A `Generator` over a loaded transformers model (or peft-wrapped model) and its tokenizer.

    `tokens_per_s` holds the decode throughput of the last `generate` call.
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "local", batch_size: int = 8,
                 generation_dtype: str | None = None) -> None:
        self.model, self.tokenizer, self.name, self.batch_size = model, tokenizer, name, batch_size
        self.tokens_per_s = 0.0
        # auto: decode with a bf16 copy of an fp32 model on CPUs with AMX (decoding is weight-bandwidth bound:
        # measured here 2x the fp32 tokens/s); fp32: always the model as is. ALIGNKIT_GENERATION_DTYPE sets it.
        self.generation_dtype = generation_dtype or os.environ.get("ALIGNKIT_GENERATION_DTYPE", "auto")
        if self.generation_dtype not in ("auto", "fp32"):
            raise ValueError(f"generation_dtype must be auto or fp32, got {self.generation_dtype!r}")
        self._bf16: tuple[Any, Any, tuple[int, ...]] | None = None  # (source model, bf16 copy, source versions)

    def _decoder_model(self) -> Any:
        """The model `generate` decodes with: the model itself, or a cached bf16 copy (see generation_dtype)."""
        import copy

        import torch

        from alignkit.train.loop import cpu_has_fast_bf16

        model = self.model
        first = next(model.parameters())
        if self.generation_dtype == "fp32" or first.device.type != "cpu" or first.dtype != torch.float32 \
                or not cpu_has_fast_bf16():
            return model
        # in-place updates (an optimizer step between two sample generations) bump a tensor's version: recopy then
        versions = tuple(p._version for p in model.parameters())
        if self._bf16 is None or self._bf16[0] is not model or self._bf16[2] != versions:
            self._bf16 = None
            twin = copy.deepcopy(model).to(torch.bfloat16)
            twin.requires_grad_(False)
            self._bf16 = (model, twin, versions)
        return self._bf16[1]

    @classmethod
    def load(cls, name: str, **model_options: Any) -> "LocalGenerator":
        """Load any model `alignkit.models.load_model` understands (built-in name, dir, hub id, .gguf)."""
        from alignkit.models.load import ModelConfig, load_model

        loaded = load_model(ModelConfig(name=name, **model_options), for_training=False)
        return cls(loaded.model, loaded.tokenizer, name=name)

    def _render(self, chats: Sequence[Chat]) -> list[str]:
        return [self.tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True) for c in chats]

    def generate(self, chats: Sequence[Chat], params: SamplingParams = SamplingParams()) -> list[list[Completion]]:
        import torch

        tok = self.tokenizer
        was_training = self.model.training
        self.model.eval()
        model = self._decoder_model()
        model.eval()
        device = next(model.parameters()).device
        side, tok.padding_side = tok.padding_side, "left"
        results: list[list[Completion]] = []
        generated, started = 0, time.perf_counter()
        try:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            texts = self._render(chats)
            for s in range(0, len(texts), self.batch_size):
                enc = tok(texts[s : s + self.batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(device)
                t0 = time.perf_counter()
                with torch.inference_mode():
                    out = model.generate(**enc, **self._generate_kwargs(params))
                batch = self._completions(out, enc["input_ids"].shape[1], enc["attention_mask"], params,
                                          time.perf_counter() - t0)
                generated += sum(c.tokens for group in batch for c in group)
                results.extend(batch)
        finally:
            tok.padding_side = side
            self.model.train(was_training)
        self.tokens_per_s = generated / max(time.perf_counter() - started, 1e-9)
        return results

    def _generate_kwargs(self, params: SamplingParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens, "pad_token_id": self.tokenizer.pad_token_id,
                                  "num_return_sequences": params.n, "return_dict_in_generate": True,
                                  "output_scores": params.logprobs}
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=None)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        return kwargs

    def _completions(self, out: Any, prompt_len: int, attention: Any, params: SamplingParams,
                     seconds: float) -> list[list[Completion]]:
        import torch

        tok = self.tokenizer
        new = out.sequences[:, prompt_len:]  # (rows * n, new)
        logps = None
        if params.logprobs:
            steps = torch.stack(out.scores, dim=1).float().log_softmax(-1)  # (rows * n, new, V)
            logps = steps.gather(-1, new[:, : steps.shape[1], None]).squeeze(-1)
        eos = {tok.eos_token_id, tok.pad_token_id} - {None}
        rows: list[list[Completion]] = []
        for r in range(new.shape[0]):
            ids = new[r].tolist()
            length = next((i for i, t in enumerate(ids) if t in eos), len(ids))
            text = tok.decode(ids[:length], skip_special_tokens=True)
            hit_stop = next((s for s in params.stop if s in text), None)
            if hit_stop is not None:
                text = text[: text.index(hit_stop)]
            finish = "stop" if length < len(ids) or hit_stop is not None else "length"
            completion = Completion(
                text=text.strip(), tokens=length, finish_reason=finish,
                token_logprobs=logps[r, :length].tolist() if logps is not None else None,
                prompt_tokens=int(attention[r // params.n].sum()), latency_s=seconds,
            )
            if r % params.n == 0:
                rows.append([])
            rows[-1].append(completion)
        return rows

    def choice_logprobs(self, chats: Sequence[Chat], choices: Sequence[str]) -> list[list[float]]:
        """Sum of log-probs of each choice's tokens as the start of the assistant reply."""
        import torch

        tok, model = self.tokenizer, self.model
        device = next(model.parameters()).device
        prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in self._render(chats)]
        choice_ids = [tok(c, add_special_tokens=False)["input_ids"] for c in choices]
        if any(not ids for ids in choice_ids):
            raise ValueError(f"a choice tokenizes to nothing: {choices!r}")
        rows = [(i, j, p + c, len(p)) for i, p in enumerate(prompts) for j, c in enumerate(choice_ids)]
        scores = [[0.0] * len(choices) for _ in chats]
        was_training = model.training
        model.eval()
        try:
            for s in range(0, len(rows), self.batch_size):
                chunk = rows[s : s + self.batch_size]
                width = max(len(r[2]) for r in chunk)
                pad = tok.pad_token_id or 0
                ids = torch.tensor([r[2] + [pad] * (width - len(r[2])) for r in chunk], device=device)
                mask = torch.tensor([[1] * len(r[2]) + [0] * (width - len(r[2])) for r in chunk], device=device)
                with torch.inference_mode():
                    logits = model(input_ids=ids, attention_mask=mask).logits.float()  # (b, T, V)
                for k, (i, j, seq, start) in enumerate(chunk):
                    target = torch.tensor(seq[start:], device=device)
                    lp = logits[k, start - 1 : len(seq) - 1].log_softmax(-1).gather(1, target[:, None])
                    scores[i][j] = float(lp.sum())
        finally:
            model.train(was_training)
        return scores


def generate_local(model: Any, tokenizer: Any, conversations: Sequence[Chat], *, max_new_tokens: int = 128,
                   batch_size: int = 8, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0) -> list[str]:
    """One reply per conversation (greedy when temperature == 0): a shortcut over `LocalGenerator`."""
    gen = LocalGenerator(model, tokenizer, batch_size=batch_size)
    params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    return [group[0].text for group in gen.generate(conversations, params)]
