"""What stands behind the server: a local transformers model, or an upstream OpenAI-compatible endpoint.

Both offer `complete(messages, params)` (one reply) and `stream(messages, params)` (an async iterator of
text deltas; closing it stops generation). The local backend runs `concurrency` generations at a time
(one on a CPU: two at once only share the cores) in worker threads, so the event loop keeps serving
/health, auth failures and guard blocks while a reply is being generated.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from dataclasses import dataclass
from typing import Any, AsyncIterator, Sequence

from alignkit.errors import AlignkitError

__all__ = ["BackendReply", "LocalBackend", "UpstreamBackend", "UpstreamError"]


class UpstreamError(AlignkitError):
    """The upstream endpoint failed; `status` is what the client is told (502 or the upstream's 4xx)."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class BackendReply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"


@dataclass(frozen=True)
class GenParams:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = 0


class _Slots:
    """`concurrency` at a time, per event loop (one backend may serve apps on several loops, e.g. tests)."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._by_loop: dict[int, asyncio.Semaphore] = {}

    def __call__(self) -> asyncio.Semaphore:
        loop = id(asyncio.get_running_loop())
        if loop not in self._by_loop:
            self._by_loop[loop] = asyncio.Semaphore(self.concurrency)
        return self._by_loop[loop]


class LocalBackend:
    def __init__(self, generator: Any, concurrency: int = 1) -> None:
        self.generator, self.name = generator, generator.name
        self._slots = _Slots(concurrency)

    @classmethod
    def load(cls, model: str, device: str = "auto", concurrency: int = 1) -> "LocalBackend":
        from alignkit.generate.local import LocalGenerator

        return cls(LocalGenerator.load(model, device=device), concurrency)

    def count_tokens(self, text: str) -> int:
        return len(self.generator.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        tok = self.generator.tokenizer
        text = tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return len(tok(text, add_special_tokens=False)["input_ids"])

    async def complete(self, messages: Sequence[dict[str, str]], params: GenParams) -> BackendReply:
        from alignkit.generate.base import SamplingParams

        sp = SamplingParams(max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                            stop=params.stop, seed=params.seed)
        async with self._slots():
            out = await asyncio.to_thread(self.generator.generate, [list(messages)], sp)
        c = out[0][0]
        return BackendReply(c.text, c.prompt_tokens, c.tokens, c.finish_reason)

    async def stream(self, messages: Sequence[dict[str, str]], params: GenParams) -> AsyncIterator[str]:
        """Text deltas as the model produces them; closing the iterator stops the generation thread."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        gen = self.generator
        tok, model = gen.tokenizer, gen.model
        stop = threading.Event()

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return stop.is_set()

        async with self._slots():
            text = tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
            enc = tok(text, return_tensors="pt", add_special_tokens=False).to(next(model.parameters()).device)
            streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=600)
            kwargs = gen._generate_kwargs(_sampling(params))
            kwargs.update(streamer=streamer, stopping_criteria=StoppingCriteriaList([_Stop()]),
                          return_dict_in_generate=False, output_scores=False)

            def run() -> None:
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                with torch.inference_mode():
                    model.generate(**enc, **kwargs)

            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            chunks = iter(streamer)
            try:
                while True:
                    delta = await asyncio.to_thread(next, chunks, None)
                    if delta is None:
                        break
                    if delta:
                        yield delta
            finally:
                stop.set()  # the client went away or the guard blocked: stop generating
                await asyncio.to_thread(worker.join)


def _sampling(params: GenParams) -> Any:
    from alignkit.generate.base import SamplingParams

    return SamplingParams(max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                          stop=params.stop, seed=params.seed)


class UpstreamBackend:
    """Proxies /chat/completions of an OpenAI-compatible server with httpx (streaming included)."""

    def __init__(self, base_url: str, model: str | None, api_key: str | None = None, timeout_s: float = 300.0,
                 concurrency: int = 16) -> None:
        import httpx

        self.base_url, self.model, self.name = base_url.rstrip("/"), model, model or "upstream"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self._slots = _Slots(concurrency)

    @classmethod
    def from_env(cls, base_url: str, model: str | None, key_env: str, timeout_s: float, concurrency: int) -> "UpstreamBackend":
        return cls(base_url, model, os.environ.get(key_env) or None, timeout_s, max(concurrency, 4))

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)  # no tokenizer for a remote model: the usual 4-characters estimate

    def prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        return sum(self.count_tokens(m.get("content", "")) for m in messages)

    def _body(self, messages: Sequence[dict[str, str]], params: GenParams, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": list(messages), "max_tokens": params.max_tokens,
                                "temperature": params.temperature, "top_p": params.top_p, "stream": stream}
        if self.model:
            body["model"] = self.model
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    async def complete(self, messages: Sequence[dict[str, str]], params: GenParams) -> BackendReply:
        import httpx

        async with self._slots():
            try:
                r = await self._client.post("/chat/completions", json=self._body(messages, params, False))
            except httpx.HTTPError as e:
                raise UpstreamError(f"upstream {self.base_url} unreachable: {type(e).__name__}") from None
        if r.status_code != 200:
            raise UpstreamError(f"upstream returned {r.status_code}: {r.text[:200]}",
                                r.status_code if 400 <= r.status_code < 500 else 502)
        data = r.json()
        choice, usage = data["choices"][0], data.get("usage") or {}
        text = choice["message"].get("content") or ""
        return BackendReply(text, usage.get("prompt_tokens", self.prompt_tokens(messages)),
                            usage.get("completion_tokens", self.count_tokens(text)),
                            choice.get("finish_reason") or "stop")

    async def stream(self, messages: Sequence[dict[str, str]], params: GenParams) -> AsyncIterator[str]:
        import httpx

        async with self._slots():
            try:
                async with self._client.stream("POST", "/chat/completions",
                                               json=self._body(messages, params, True)) as r:
                    if r.status_code != 200:
                        body = (await r.aread()).decode(errors="replace")[:200]
                        raise UpstreamError(f"upstream returned {r.status_code}: {body}", 502)
                    async for line in r.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == "[DONE]":
                            break
                        choices = json.loads(payload).get("choices") or [{}]
                        delta = (choices[0].get("delta") or {}).get("content")
                        if delta:
                            yield delta
            except httpx.HTTPError as e:
                raise UpstreamError(f"upstream {self.base_url} failed: {type(e).__name__}") from None

    async def aclose(self) -> None:
        await self._client.aclose()
