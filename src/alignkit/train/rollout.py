"""Rollouts for PPO and GRPO: prompts in, sampled completions (exact token ids) out.

The trainers talk to a `Generator` (alignkit.generate), so any backend can produce rollouts. The default
local backend here, `GroupSampler`, is built for RL's shape of work, G samples of the same prompt:
- the prompt is prefilled once and its KV cache copied G times (`generate(num_return_sequences=G)`
  prefills it G times);
- rows that hit EOS leave the batch at once, so finished samples cost nothing while others continue;
- it returns the sampled token ids (`Completion.meta["token_ids"]`), so training scores exactly the
  tokens that were sampled, not a re-tokenization of the decoded text.
Backends that return only text (e.g. `LocalGenerator`, an HTTP endpoint) still work: their text is
re-tokenized, with EOS appended when the completion stopped.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Sequence

from alignkit.generate.base import Chat, Completion, SamplingParams

__all__ = ["RolloutSettings", "Rollout", "GroupSampler", "collect_rollouts", "make_sampler", "merged_adapters",
           "cast_weights", "sampling_dtype", "eos_ids"]

log = logging.getLogger(__name__)


@dataclass
class RolloutSettings:
    max_new_tokens: int = field(default=128, metadata={"help": "longest sampled completion (tokens); longer ones are truncated"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the rollouts"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass (1.0 = off)"})
    backend: Literal["group", "local"] = field(default="group", metadata={"help": "group: shared-prefill sampler returning exact token ids; local: LocalGenerator (transformers generate)"})
    batch_size: int = field(default=64, metadata={"help": "completions sampled together (rows in the KV cache)"})
    dtype: Literal["auto", "float32", "bfloat16"] = field(default="auto", metadata={"help": "weights and KV cache while sampling (group backend): auto = bfloat16 when training runs in bf16 (run.precision), else the model's own dtype"})
    question_template: str = field(default="{question}", metadata={"help": "user turn for {question, answer} rows (GSM8K)"})
    eval_prompts: int | None = field(default=32, metadata={"help": "held-out prompts scored (greedy) before, during and after training (null = all)"})
    eval_max_new_tokens: int | None = field(default=None, metadata={"help": "completion length for held-out scoring (null = max_new_tokens)"})
    sample_prompts: int = field(default=3, metadata={"help": "held-out replies shown before and after training"})

    def validate(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 for RL rollouts (greedy samples cannot explore)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if "{question}" not in self.question_template:
            raise ValueError("question_template must contain {question}")


@dataclass
class Rollout:
    """One sampled completion of one prompt."""

    prompt_index: int  # index into the step's prompt list
    prompt_ids: list[int]
    ids: list[int]  # sampled tokens, ending with EOS when `stopped`
    text: str
    stopped: bool  # True: ended with EOS; False: cut at max_tokens (truncated)
    meta: dict[str, Any] = field(default_factory=dict)


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a reply: the tokenizer's EOS plus the generation config's."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(extra) if isinstance(extra, (list, tuple)) else ({extra} if extra is not None else set())
    return ids


def _next_token(logits: Any, temperature: float, top_p: float, gen: Any) -> Any:
    """(b, V) logits -> (b,) sampled ids: greedy, or temperature + nucleus (top-p) sampling."""
    import torch

    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p > top_p  # keep the smallest set whose mass reaches top_p
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    # inverse-CDF sampling: one cumsum + binary search, ~4x faster than torch.multinomial on a 49k vocabulary
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.shape[0], 1, generator=gen, device=probs.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=probs.shape[-1] - 1).squeeze(1)


@contextlib.contextmanager
def merged_adapters(model: Any) -> Iterator[Any]:
    """Sample from a LoRA policy with its adapters folded into the base weights, then restore them exactly.

    A LoRA layer costs two extra small matmuls per token, which dominate decoding a small model on CPU. Each
    adapted weight is replaced by a new tensor W + s*BA for the duration and the original tensor object is
    put back afterwards, so (unlike peft's merge/unmerge) the base weights never drift by rounding.
    """
    import torch

    if not (hasattr(model, "peft_config") and hasattr(model, "disable_adapter")):
        yield model
        return
    saved = []
    try:
        with torch.no_grad():
            for module in model.modules():
                if not (hasattr(module, "get_delta_weight") and hasattr(module, "lora_A")):
                    continue
                active = [a for a in module.active_adapters if a in module.lora_A]
                if not active:
                    continue
                base = module.get_base_layer()
                saved.append((base, base.weight.data))
                base.weight.data = base.weight.data + sum(module.get_delta_weight(a) for a in active)
        with model.disable_adapter():  # adapter layers now run the (merged) base weights only
            yield model
    finally:
        for base, original in saved:
            base.weight.data = original


@contextlib.contextmanager
def cast_weights(model: Any, dtype: Any) -> Iterator[Any]:
    """Run `model` with its floating-point parameters as `dtype` copies, then put the original tensors back.

    Decoding a small model on CPU is bound by reading the weights and the KV cache for every token; bf16
    halves those bytes and uses the CPU's bf16 matrix units (AMX), where autocast would instead re-cast
    every fp32 weight at every decoded token. Buffers (e.g. rotary frequencies) keep their dtype. Like
    `merged_adapters`, the original tensor objects come back, so training never sees rounded weights.
    """
    import torch

    saved = []
    try:
        with torch.no_grad():
            for param in model.parameters():
                if param.dtype.is_floating_point and param.dtype != dtype:
                    saved.append((param, param.data))
                    param.data = param.data.to(dtype)
        yield model
    finally:
        for param, original in saved:
            param.data = original


def sampling_dtype(setting: str, autocast: Any) -> Any:
    """The dtype rollouts sample in: `rollout.dtype`, or for auto the training autocast's dtype (None = as loaded)."""
    import torch

    if setting != "auto":
        return getattr(torch, setting)
    ctx = autocast()
    return ctx.fast_dtype if isinstance(ctx, torch.autocast) else None


@functools.lru_cache(maxsize=1)
def _preallocated_layer_class() -> type:
    """A transformers DynamicLayer that appends into a buffer sized once, instead of torch.cat per token.

    torch.cat re-copies the whole cache of every layer at every decoded token (O(T^2) copying); writing into
    a preallocated (rows, heads, capacity, dim) buffer copies only the new token. Built lazily so importing
    this module imports neither torch nor transformers.
    """
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def __init__(self, capacity: int) -> None:
            super().__init__()
            self.capacity, self.length = capacity, 0

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                b, h, _, d = key_states.shape
                self.k_buf = key_states.new_empty(b, h, self.capacity, d)
                self.v_buf = value_states.new_empty(b, h, self.capacity, d)
            n = key_states.shape[-2]
            if self.length + n > self.capacity:
                raise RuntimeError(f"KV cache capacity {self.capacity} exceeded")
            self.k_buf[:, :, self.length : self.length + n] = key_states
            self.v_buf[:, :, self.length : self.length + n] = value_states
            self.length += n
            self.keys, self.values = self.k_buf[:, :, : self.length], self.v_buf[:, :, : self.length]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def batch_repeat_interleave(self, repeats: int) -> None:
            self.k_buf = self.k_buf.repeat_interleave(repeats, dim=0)
            self.v_buf = self.v_buf.repeat_interleave(repeats, dim=0)
            self.keys, self.values = self.k_buf[:, :, : self.length], self.v_buf[:, :, : self.length]

        def batch_select_indices(self, indices: Any) -> None:
            self.k_buf, self.v_buf = self.k_buf[indices], self.v_buf[indices]
            self.keys, self.values = self.k_buf[:, :, : self.length], self.v_buf[:, :, : self.length]

    return PreallocatedLayer


def _kv_cache(model: Any, capacity: int) -> Any:
    """A preallocated KV cache for plain full-attention models; transformers' own DynamicCache otherwise."""
    from transformers import DynamicCache

    config = getattr(model, "config", None)
    text = config.get_text_config(decoder=True) if config is not None else None
    types = set(getattr(text, "layer_types", None) or ["full_attention"])
    if text is None or types != {"full_attention"} or getattr(text, "sliding_window", None):
        return DynamicCache(config=config)
    cache = DynamicCache()
    layer = _preallocated_layer_class()
    cache.layers, cache.layer_class_to_replicate = [], lambda: layer(capacity)
    return cache


def sample_groups(model: Any, prompts: Sequence[Sequence[int]], *, n: int, max_new_tokens: int,
                  temperature: float, top_p: float, stop_ids: set[int], pad_id: int,
                  gen: Any) -> list[list[tuple[list[int], bool]]]:
    """n samples per prompt with one shared prefill; returns [prompt][sample] = (ids, stopped)."""
    import torch

    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):  # left padding: every prompt ends at the same column
        ids[i, width - len(p):] = torch.tensor(list(p))
        attn[i, width - len(p):] = 1
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    ids, attn, pos = ids.to(device), attn.to(device), pos.to(device)
    cache = _kv_cache(model, width + max_new_tokens)
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, past_key_values=cache, use_cache=True,
                   logits_to_keep=1).logits[:, -1]  # (P, V)
    # one prefill, n continuations: copy the prompt's KV cache n times
    cache.batch_repeat_interleave(n)
    logits, attn = logits.repeat_interleave(n, 0), attn.repeat_interleave(n, 0)
    next_pos = pos[:, -1:].repeat_interleave(n, 0) + 1  # (b, 1)
    alive = list(range(len(prompts) * n))  # row -> sample
    out: list[list[int]] = [[] for _ in alive]
    stopped = [False] * len(alive)
    for step in range(max_new_tokens):
        token = _next_token(logits, temperature, top_p, gen)  # (b,)
        keep = []
        for row, t in enumerate(token.tolist()):
            sample = alive[row]
            out[sample].append(t)
            if t in stop_ids:
                stopped[sample] = True
            else:
                keep.append(row)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(alive):  # finished rows leave the batch
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            token, attn, next_pos = token[index], attn[index], next_pos[index]
            alive = [alive[r] for r in keep]
        attn = torch.cat([attn, attn.new_ones(len(alive), 1)], dim=1)
        logits = model(input_ids=token[:, None], attention_mask=attn, position_ids=next_pos, past_key_values=cache,
                       use_cache=True).logits[:, -1]
        next_pos = next_pos + 1
    return [[(out[i * n + k], stopped[i * n + k]) for k in range(n)] for i in range(len(prompts))]


class GroupSampler:
    """A `Generator` for RL rollouts over a local (optionally LoRA) model: shared prefill, early exit."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "group-sampler", batch_size: int = 32,
                 dtype: Any = None) -> None:
        self.model, self.tokenizer, self.name, self.batch_size = model, tokenizer, name, batch_size
        self.dtype = dtype  # sample with the weights cast to this dtype (None: as loaded), see `cast_weights`
        self.tokens_per_s = 0.0

    def generate(self, chats: Sequence[Chat], params: SamplingParams = SamplingParams()) -> list[list[Completion]]:
        from alignkit.data.template import render_prompt

        return self.generate_ids([render_prompt(self.tokenizer, list(c)) for c in chats], params)

    def generate_ids(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        """Like `generate`, from rendered prompt ids (what the trainers hold already)."""
        import torch

        if params.stop:
            raise NotImplementedError("GroupSampler stops at EOS only; stop strings are not supported")
        model, tok = self.model, self.tokenizer
        device = next(model.parameters()).device
        gen = torch.Generator(device=device)
        gen.manual_seed(params.seed if params.seed is not None else int(torch.seed() % 2**31))
        per_chunk = max(1, self.batch_size // params.n)
        stop = eos_ids(model, tok)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        was_training = model.training
        model.eval()
        results: list[list[Completion]] = []
        started, produced = time.perf_counter(), 0
        try:
            cast = cast_weights if self.dtype is not None else (lambda m, _dtype: contextlib.nullcontext(m))
            with torch.inference_mode(), merged_adapters(model) as merged, cast(merged, self.dtype) as merged:
                for s in range(0, len(prompts), per_chunk):
                    chunk = prompts[s : s + per_chunk]
                    t0 = time.perf_counter()
                    sampled = sample_groups(merged, chunk, n=params.n, max_new_tokens=params.max_tokens,
                                            temperature=params.temperature, top_p=params.top_p, stop_ids=stop,
                                            pad_id=pad, gen=gen)
                    seconds = time.perf_counter() - t0
                    for prompt, group in zip(chunk, sampled):
                        results.append([self._completion(prompt, ids, done, seconds) for ids, done in group])
                        produced += sum(len(ids) for ids, _ in group)
        finally:
            model.train(was_training)
        self.tokens_per_s = produced / max(time.perf_counter() - started, 1e-9)
        return results

    def _completion(self, prompt: Sequence[int], ids: list[int], stopped: bool, seconds: float) -> Completion:
        body = ids[:-1] if stopped else ids
        text = self.tokenizer.decode(body, skip_special_tokens=True).strip()
        return Completion(text=text, tokens=len(ids), finish_reason="stop" if stopped else "length",
                          prompt_tokens=len(prompt), latency_s=seconds,
                          meta={"token_ids": list(ids), "prompt_ids": list(prompt)})

    def choice_logprobs(self, chats: Sequence[Chat], choices: Sequence[str]) -> list[list[float]]:
        from alignkit.generate.local import LocalGenerator

        return LocalGenerator(self.model, self.tokenizer).choice_logprobs(chats, choices)


def collect_rollouts(generator: Any, tokenizer: Any, chats: Sequence[Chat], prompt_ids: Sequence[Sequence[int]],
                     params: SamplingParams) -> list[Rollout]:
    """params.n rollouts per prompt, flattened prompt-major (prompt i's samples are i*n .. i*n+n-1)."""
    if isinstance(generator, GroupSampler):
        groups = generator.generate_ids(prompt_ids, params)
    else:
        groups = generator.generate(chats, params)
    eos = tokenizer.eos_token_id
    out: list[Rollout] = []
    for i, (group, prompt) in enumerate(zip(groups, prompt_ids)):
        for c in group:
            ids = c.meta.get("token_ids")
            if ids is None:  # a text-only backend: re-tokenize, and mark the stop with EOS
                ids = tokenizer(c.text, add_special_tokens=False)["input_ids"]
                ids = ids + [eos] if c.finish_reason == "stop" and eos is not None else ids
            if not ids:  # an immediate stop with nothing to train on: keep the EOS as the action
                ids = [eos]
            out.append(Rollout(prompt_index=i, prompt_ids=list(c.meta.get("prompt_ids") or prompt), ids=list(ids),
                               text=c.text, stopped=c.finish_reason == "stop"))
    return out


def make_sampler(backend: str, model: Any, tokenizer: Any, batch_size: int, dtype: Any = None) -> Any:
    """The rollout `Generator`: the shared-prefill GroupSampler (sampling in `dtype`), or the generic LocalGenerator."""
    if backend == "group":
        return GroupSampler(model, tokenizer, batch_size=batch_size, dtype=dtype)
    from alignkit.generate.local import LocalGenerator

    return LocalGenerator(model, tokenizer, batch_size=batch_size)
