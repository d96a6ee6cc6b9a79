"""vLLM in-process as a `Generator` (GPU; optional extra `alignkit[vllm]`).

    gen = VLLMGenerator("Qwen/Qwen2.5-7B-Instruct", gpu_memory_utilization=0.85)

vLLM is imported only when a VLLMGenerator is built, so alignkit runs without it; building one without
vLLM installed raises a ModelError that says how to install it. Generation goes through `LLM.chat`
(vLLM applies the model's chat template and batches all conversations with paged attention).
`choice_logprobs` scores each choice exactly: the rendered prompt + the choice tokens are run with
`prompt_logprobs` and the log-probs of the choice positions are summed, so multi-token choices work.
"""

from __future__ import annotations

import importlib.util
import math
import time
from typing import Any, Sequence

from alignkit.errors import ModelError
from alignkit.generate.base import Chat, Completion, SamplingParams

__all__ = ["VLLMGenerator", "vllm_available"]


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


class VLLMGenerator:
    """A vLLM `LLM` engine behind the `Generator` interface; `engine_options` go to `vllm.LLM(...)`."""

    def __init__(self, model: str, *, llm: Any = None, **engine_options: Any) -> None:
        self.name = f"vllm:{model}"
        self.tokens_per_s = 0.0
        if llm is not None:  # an engine the caller already built (shares GPU memory with a trainer)
            self.llm = llm
            return
        if not vllm_available():
            raise ModelError(
                f"generator 'vllm:{model}' needs vLLM, which is not installed. vLLM runs on a CUDA GPU: "
                "`pip install 'alignkit[vllm]'` (or `pip install vllm`). On a CPU machine use the local "
                f"backend ('{model}') or an OpenAI-compatible server ('openai:http://host:8000/v1::{model}').")
        from vllm import LLM

        try:
            self.llm = LLM(model=model, **engine_options)
        except Exception as e:  # noqa: BLE001 - vLLM raises many types; say which model failed
            raise ModelError(f"vLLM could not load {model!r}: {type(e).__name__}: {e}") from e

    @staticmethod
    def _sampling(params: SamplingParams, **extra: Any) -> Any:
        from vllm import SamplingParams as VSamplingParams

        return VSamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens,
            stop=list(params.stop) or None, seed=params.seed,
            logprobs=1 if params.logprobs else None,  # the sampled token is always among the returned ones
            **extra,
        )

    def generate(self, chats: Sequence[Chat], params: SamplingParams = SamplingParams()) -> list[list[Completion]]:
        if not chats:
            return []
        started = time.perf_counter()
        outputs = self.llm.chat([list(map(dict, c)) for c in chats], self._sampling(params), use_tqdm=False)
        seconds = time.perf_counter() - started
        results = [[_completion(o, len(req.prompt_token_ids or []), seconds) for o in req.outputs]
                   for req in outputs]
        tokens = sum(c.tokens for group in results for c in group)
        self.tokens_per_s = tokens / max(seconds, 1e-9)
        return results

    def choice_logprobs(self, chats: Sequence[Chat], choices: Sequence[str]) -> list[list[float]]:
        """Sum of the log-probs of each choice's tokens right after the generation prompt."""
        from vllm import SamplingParams as VSamplingParams

        tok = self.llm.get_tokenizer()
        # render to text, then encode: apply_chat_template(tokenize=True) returns a list in transformers 4
        # but a BatchEncoding in 5; the template already holds any special tokens
        texts = [tok.apply_chat_template(list(map(dict, c)), tokenize=False, add_generation_prompt=True) for c in chats]
        prompts = [tok.encode(t, add_special_tokens=False) for t in texts]
        choice_ids = [tok.encode(c, add_special_tokens=False) for c in choices]
        if any(not ids for ids in choice_ids):
            raise ValueError(f"a choice tokenizes to nothing: {choices!r}")
        requests = [{"prompt_token_ids": list(p) + ids} for p in prompts for ids in choice_ids]
        # max_tokens=1: nothing useful is generated; prompt_logprobs=1 returns each prompt token's own
        # log-prob (plus the top-1), which is all that scoring needs
        outs = self.llm.generate(requests, VSamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1),
                                 use_tqdm=False)
        scores = [[0.0] * len(choices) for _ in chats]
        for k, out in enumerate(outs):
            i, j = divmod(k, len(choices))
            start = len(prompts[i])
            scores[i][j] = _sum_prompt_logprobs(out.prompt_logprobs, requests[k]["prompt_token_ids"], start)
        return scores


def _sum_prompt_logprobs(prompt_logprobs: Any, ids: list[int], start: int) -> float:
    total = 0.0
    for pos in range(start, len(ids)):
        entry = prompt_logprobs[pos] if prompt_logprobs is not None else None
        if not entry or ids[pos] not in entry:
            return -math.inf
        lp = entry[ids[pos]]
        total += float(getattr(lp, "logprob", lp))
    return total


def _completion(out: Any, prompt_tokens: int, seconds: float) -> Completion:
    token_logprobs = None
    if out.logprobs is not None:
        token_logprobs = [float(getattr(step[t], "logprob", step[t])) for step, t in zip(out.logprobs, out.token_ids)]
    finish = "length" if out.finish_reason == "length" else "stop"
    return Completion(text=out.text.strip(), tokens=len(out.token_ids), finish_reason=finish,
                      token_logprobs=token_logprobs, prompt_tokens=prompt_tokens, latency_s=seconds)
