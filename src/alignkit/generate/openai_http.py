"""A `Generator` over any OpenAI-compatible chat-completions endpoint (vLLM server, llama.cpp server,
OpenAI, TGI, Ollama's /v1 and others).

    gen = OpenAIHTTPGenerator("http://localhost:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")
    gen.generate([[{"role": "user", "content": "Hi"}]], SamplingParams(max_tokens=32))

- concurrency: at most `concurrency` requests in flight (a thread pool over one pooled httpx client);
- retries: 429, 5xx, timeouts and dropped connections are retried with exponential backoff and jitter,
  honouring the server's Retry-After header; other 4xx fail at once with the server's message;
- API key from an environment variable (`api_key_env`, default OPENAI_API_KEY), never from a file or
  an argument that would end up in a recipe or a log; without it no Authorization header is sent;
- clear errors: authentication (401/403) names the variable, an unreachable host names the URL;
- `choice_logprobs` asks for one token with `logprobs: true, top_logprobs: K` and reads each choice's
  first-token log-prob from the returned top-K list (choices must be single tokens; a choice absent from
  the top-K gets -inf). A server that returns no log-probs raises NotImplementedError.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from alignkit.errors import AlignkitError
from alignkit.generate.base import Chat, Completion, SamplingParams

__all__ = ["OpenAIHTTPGenerator", "HTTPGeneratorError", "AuthenticationError", "backoff_delay",
           "retry_after_seconds", "parse_openai_spec"]

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class HTTPGeneratorError(AlignkitError):
    """The endpoint could not be reached or kept failing; the message names the URL."""


class AuthenticationError(HTTPGeneratorError):
    """401/403 from the endpoint: the API key is missing, wrong or lacks access."""


def backoff_delay(attempt: int, *, base_s: float, max_s: float, rng: random.Random,
                  retry_after_s: float | None = None) -> float:
    """Seconds to wait before retry `attempt` (0-based): "full jitter" exponential backoff.

    Full jitter (uniform in [0, min(max, base * 2^attempt)]) spreads retries of many concurrent clients
    so they do not hit a recovering server in lockstep. A server's Retry-After is a floor (it knows
    when it will have capacity), capped at `max_s` so a bogus header cannot stall a run for hours.
    """
    ceiling = min(max_s, base_s * (2 ** attempt))
    delay = rng.uniform(0.0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, max_s))
    return delay


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Parse a Retry-After header: delta-seconds ("3", "1.5") or an HTTP date; None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_openai_spec(spec: str) -> tuple[str, str]:
    """"openai:http://host:8000/v1::model-name" (or without the "openai:" prefix) -> (base_url, model).

    The model part is optional ("" = ask the server's /models for the one it serves).
    """
    body = spec[len("openai:"):] if spec.startswith("openai:") else spec
    url, _, model = body.partition("::")
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise AlignkitError(f"generator spec {spec!r}: expected openai:http(s)://host:port/v1::model-name")
    return url, model.strip()


class OpenAIHTTPGenerator:
    """OpenAI-compatible chat completions as a `Generator` (see the module docstring)."""

    def __init__(self, base_url: str, model: str = "", *, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout_s: float = 120.0, connect_timeout_s: float = 10.0,
                 max_retries: int = 5, backoff_base_s: float = 1.0, backoff_max_s: float = 60.0,
                 top_logprobs: int = 20, seed: int | None = 0, extra_body: dict[str, Any] | None = None) -> None:
        import httpx  # lazy: importing alignkit.generate must stay cheap

        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.base_url, self.api_key_env = base_url.rstrip("/"), api_key_env
        self.concurrency, self.max_retries = concurrency, max_retries
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.top_logprobs, self.extra_body = top_logprobs, dict(extra_body or {})
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._model = model
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env, "").strip() if api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._has_key = bool(key)
        timeout = httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s))
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = httpx.Client(timeout=timeout, limits=limits, headers=headers)
        self.retries_done = 0  # total retries across calls (for logs and tests)
        self.tokens_per_s = 0.0

    # ---- lifecycle ----------------------------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "OpenAIHTTPGenerator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def model(self) -> str:
        """The served model name; asked from GET /models when not given (vLLM serves exactly one)."""
        if not self._model:
            data = self._request("GET", "/models", None)
            models = [m.get("id") for m in data.get("data", []) if isinstance(m, dict) and m.get("id")]
            if not models:
                raise HTTPGeneratorError(f"{self.base_url}/models lists no model; give one as "
                                         f"openai:{self.base_url}::MODEL")
            self._model = str(models[0])
        return self._model

    @property
    def name(self) -> str:
        return f"openai:{self.base_url}::{self._model or '?'}"

    # ---- one request with retries -------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        import httpx

        url = self.base_url + path
        for attempt in range(self.max_retries + 1):
            retry_after, problem = None, ""
            try:
                resp = self._client.request(method, url, json=body)
            except httpx.ConnectError as e:
                # refused / DNS failure: a wrong URL or a server that is not up; retrying will not fix it
                raise HTTPGeneratorError(f"cannot reach {url}: {e} "
                                         "(is the server running, and is the URL right?)") from None
            except httpx.TimeoutException as e:
                problem = f"timed out ({type(e).__name__}) after {self._client.timeout.read}s"
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
                problem = f"connection dropped ({e})"
            else:
                if resp.status_code < 400:
                    return self._json(resp, url)
                if resp.status_code in (401, 403):
                    raise self._auth_error(resp, url)
                if resp.status_code not in RETRY_STATUS:
                    raise HTTPGeneratorError(f"{url} answered HTTP {resp.status_code}: {_server_message(resp)}")
                retry_after = retry_after_seconds(resp.headers.get("retry-after"))
                problem = f"HTTP {resp.status_code}: {_server_message(resp)}"
            if attempt == self.max_retries:
                raise HTTPGeneratorError(f"{url} failed after {attempt + 1} attempts; last: {problem}")
            with self._rng_lock:
                delay = backoff_delay(attempt, base_s=self.backoff_base_s, max_s=self.backoff_max_s,
                                      rng=self._rng, retry_after_s=retry_after)
            log.warning("%s %s; retry %d/%d in %.1fs", url, problem, attempt + 1, self.max_retries, delay)
            self.retries_done += 1
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _auth_error(self, resp: Any, url: str) -> AuthenticationError:
        if self._has_key:
            hint = f"the key in ${self.api_key_env} was rejected"
        else:
            hint = f"no API key was sent: set ${self.api_key_env}"
        return AuthenticationError(f"{url} answered HTTP {resp.status_code} (authentication): {hint}; "
                                   f"server said: {_server_message(resp)}")

    @staticmethod
    def _json(resp: Any, url: str) -> dict[str, Any]:
        try:
            data = resp.json()
        except ValueError:
            raise HTTPGeneratorError(f"{url} returned non-JSON: {resp.text[:200]!r}") from None
        if not isinstance(data, dict):
            raise HTTPGeneratorError(f"{url} returned {type(data).__name__}, expected a JSON object")
        return data

    # ---- Generator ----------------------------------------------------------------------------------

    def _body(self, chat: Chat, params: SamplingParams, n: int, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model, "messages": [dict(m) for m in chat], "max_tokens": params.max_tokens,
            "temperature": params.temperature, "top_p": params.top_p, "n": n,
        }
        if params.stop:
            body["stop"] = list(params.stop)[:4]  # OpenAI accepts at most 4 stop strings
        if seed is not None:
            body["seed"] = seed
        if params.logprobs:
            body["logprobs"] = True
        body.update(self.extra_body)
        return body

    def _one(self, chat: Chat, params: SamplingParams) -> list[Completion]:
        """`params.n` completions for one chat; servers that return fewer choices (llama.cpp ignores
        `n`) get follow-up requests with shifted seeds until there are n."""
        out: list[Completion] = []
        rounds = 0
        while len(out) < params.n:
            seed = None if params.seed is None else params.seed + rounds
            t0 = time.perf_counter()
            data = self._request("POST", "/chat/completions", self._body(chat, params, params.n - len(out), seed))
            choices = data.get("choices")
            if not isinstance(choices, list) or not choices:
                raise HTTPGeneratorError(f"{self.base_url}/chat/completions returned no choices: {str(data)[:200]}")
            out.extend(_completion(c, data, time.perf_counter() - t0) for c in choices[: params.n - len(out)])
            rounds += 1
        return out

    def generate(self, chats: Sequence[Chat], params: SamplingParams = SamplingParams()) -> list[list[Completion]]:
        started = time.perf_counter()
        results = self._map(lambda chat: self._one(chat, params), chats)
        tokens = sum(c.tokens for group in results for c in group)
        self.tokens_per_s = tokens / max(time.perf_counter() - started, 1e-9)
        return results

    def _map(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))  # re-raises the first error, in order

    def choice_logprobs(self, chats: Sequence[Chat], choices: Sequence[str]) -> list[list[float]]:
        """First-token log-probs of each (single-token) choice from the server's top_logprobs."""
        if not choices:
            raise ValueError("choices must not be empty")

        def score(chat: Chat) -> list[float]:
            body = {"model": self.model, "messages": [dict(m) for m in chat], "max_tokens": 1,
                    "temperature": 0.0, "logprobs": True, "top_logprobs": self.top_logprobs, **self.extra_body}
            data = self._request("POST", "/chat/completions", body)
            top = _first_top_logprobs(data)
            if top is None:
                raise NotImplementedError(
                    f"{self.base_url} returned no top_logprobs for the first token, so choice log-probs are "
                    "unavailable from this server; use a server that supports `logprobs`/`top_logprobs` "
                    "(vLLM, llama.cpp, OpenAI), or a local model")
            return [_match_choice(choice, top) for choice in choices]

        return self._map(score, chats)


def _server_message(resp: Any) -> str:
    try:
        data = resp.json()
    except ValueError:
        return (resp.text or "").strip()[:300] or "(empty body)"
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err)[:300]
    return str(err or data)[:300]


def _completion(choice: dict[str, Any], data: dict[str, Any], seconds: float) -> Completion:
    message = choice.get("message") or {}
    text = message.get("content") if isinstance(message, dict) else None
    if text is None:
        text = choice.get("text", "")
    lp = choice.get("logprobs")
    token_logprobs = None
    if isinstance(lp, dict) and isinstance(lp.get("content"), list):
        token_logprobs = [float(t.get("logprob", -math.inf)) for t in lp["content"]]
    usage = data.get("usage") or {}
    n_choices = max(len(data.get("choices") or []), 1)
    tokens = len(token_logprobs) if token_logprobs is not None else int(usage.get("completion_tokens", 0)) // n_choices
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    return Completion(text=str(text).strip(), tokens=tokens, finish_reason=finish, token_logprobs=token_logprobs,
                      prompt_tokens=int(usage.get("prompt_tokens", 0)), latency_s=seconds,
                      meta={"finish_reason_raw": choice.get("finish_reason")})


def _first_top_logprobs(data: dict[str, Any]) -> list[tuple[str, float]] | None:
    try:
        first = data["choices"][0]["logprobs"]["content"][0]
        return [(str(t["token"]), float(t["logprob"])) for t in first["top_logprobs"]] or None
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _match_choice(choice: str, top: list[tuple[str, float]]) -> float:
    """log P(first token spells `choice`): tokens equal after stripping whitespace are pooled
    (log-sum-exp), since "A" and " A" both mean the same answer at the start of a reply."""
    want = choice.strip()
    hits = [lp for tok, lp in top if tok.strip() == want]
    if not hits:
        return -math.inf
    m = max(hits)
    return m + math.log(sum(math.exp(h - m) for h in hits))
