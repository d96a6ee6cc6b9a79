"""The OpenAI-compatible HTTP backend against a real HTTP server on loopback (started here, in a thread).

The server speaks the chat-completions protocol and can be told to answer 429/5xx a few times, to sleep
past the client's timeout, to demand an API key, to drop log-probs, or to ignore `n` (as llama.cpp does).
"""

from __future__ import annotations

import json
import math
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from alignkit.errors import AlignkitError
from alignkit.generate.base import SamplingParams
from alignkit.generate.openai_http import (
    AuthenticationError,
    HTTPGeneratorError,
    OpenAIHTTPGenerator,
    backoff_delay,
    parse_openai_spec,
    retry_after_seconds,
)


class Behaviour:
    def __init__(self) -> None:
        self.fail_status: list[int] = []  # statuses to answer first, one per request
        self.retry_after = "0"
        self.sleep_s = 0.0
        self.key: str | None = None
        self.logprobs = True
        self.ignore_n = False
        self.top: list[tuple[str, float]] = [("A", -0.2), (" A", -3.0), ("B", -1.9), ("C", -4.0)]
        self.requests: list[dict[str, Any]] = []
        self.inflight = 0
        self.max_inflight = 0
        self.lock = threading.Lock()


def _handler(state: Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def _authorized(self) -> bool:
            if state.key is None:
                return True
            if self.headers.get("Authorization") == f"Bearer {state.key}":
                return True
            self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
            return False

        def do_GET(self) -> None:  # noqa: N802
            if self._authorized() and self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": "tiny-chat", "object": "model"}]})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with state.lock:
                state.requests.append(body)
                status = state.fail_status.pop(0) if state.fail_status else 200
                state.inflight += 1
                state.max_inflight = max(state.max_inflight, state.inflight)
            try:
                if not self._authorized():
                    return
                if status != 200:
                    self._send(status, {"error": {"message": f"try again ({status})"}},
                               {"Retry-After": state.retry_after})
                    return
                if state.sleep_s:
                    time.sleep(state.sleep_s)
                if body.get("max_tokens", 1) < 1 or not body.get("messages"):
                    self._send(400, {"error": {"message": "bad request: messages required"}})
                    return
                self._send(200, self._completion(body))
            finally:
                with state.lock:
                    state.inflight -= 1

        def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
            last = body["messages"][-1]["content"]
            n = 1 if state.ignore_n else int(body.get("n", 1))
            choices = []
            for i in range(n):
                text = f"echo {i} seed={body.get('seed')}: {last}"
                choice: dict[str, Any] = {"index": i, "message": {"role": "assistant", "content": text},
                                          "finish_reason": "stop"}
                if body.get("logprobs") and state.logprobs:
                    words = text.split()[: body["max_tokens"]]
                    choice["logprobs"] = {"content": [
                        {"token": w, "logprob": -0.5, "top_logprobs": [
                            {"token": t, "logprob": lp} for t, lp in state.top[: body.get("top_logprobs", 0)]]}
                        for w in words]}
                    if body["max_tokens"] == 1:
                        choice["finish_reason"] = "length"
                choices.append(choice)
            return {"id": "x", "object": "chat.completion", "model": body["model"], "choices": choices,
                    "usage": {"prompt_tokens": len(last.split()), "completion_tokens": 4 * n}}

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    state = Behaviour()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", state
    finally:
        httpd.shutdown()
        httpd.server_close()


def _gen(url: str, **kw: Any) -> OpenAIHTTPGenerator:
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("api_key_env", "ALIGNKIT_TEST_KEY")
    return OpenAIHTTPGenerator(url, kw.pop("model", "tiny-chat"), **kw)


def _chats(k: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"question {i}"}] for i in range(k)]


def test_generate_success_order_and_concurrency_limit(server, monkeypatch) -> None:
    url, state = server
    monkeypatch.delenv("ALIGNKIT_TEST_KEY", raising=False)
    state.sleep_s = 0.15
    with _gen(url, concurrency=2) as gen:
        out = gen.generate(_chats(5), SamplingParams(max_tokens=8, seed=3, stop=("\n",)))
    assert [g[0].text for g in out] == [f"echo 0 seed=3: question {i}" for i in range(5)]
    assert state.max_inflight == 2  # limit respected, and the pool really ran requests in parallel
    first = state.requests[0]
    assert (first["model"], first["max_tokens"], first["stop"], first["temperature"]) == ("tiny-chat", 8, ["\n"], 0.0)
    assert out[0][0].finish_reason == "stop" and out[0][0].prompt_tokens == 2


def test_429_is_retried_honouring_retry_after(server) -> None:
    url, state = server
    state.fail_status, state.retry_after = [429], "0.3"
    gen = _gen(url)
    t0 = time.perf_counter()
    out = gen.generate(_chats(1))
    assert time.perf_counter() - t0 >= 0.3  # waited at least Retry-After
    assert gen.retries_done == 1 and len(state.requests) == 2
    assert out[0][0].text.endswith("question 0")


def test_5xx_retried_then_gives_up_with_clear_error(server) -> None:
    url, state = server
    state.fail_status = [503, 502]
    assert _gen(url, max_retries=3).generate(_chats(1))[0][0].text
    state.fail_status = [500] * 5
    with pytest.raises(HTTPGeneratorError, match=r"chat/completions failed after 3 attempts; last: HTTP 500"):
        _gen(url, max_retries=2).generate(_chats(1))


def test_timeout_is_retried_then_reported(server) -> None:
    url, state = server
    state.sleep_s = 1.0
    gen = _gen(url, timeout_s=0.25, max_retries=1)
    t0 = time.perf_counter()
    with pytest.raises(HTTPGeneratorError, match=r"failed after 2 attempts; last: timed out"):
        gen.generate(_chats(1))
    assert time.perf_counter() - t0 < 1.5  # did not wait for the server's sleep
    assert len(state.requests) == 2


def test_bad_or_missing_key_fails_at_once_naming_the_variable(server, monkeypatch) -> None:
    url, state = server
    state.key = "sekret"
    monkeypatch.setenv("ALIGNKIT_TEST_KEY", "wrong")
    with pytest.raises(AuthenticationError, match=r"HTTP 401.*\$ALIGNKIT_TEST_KEY was rejected.*Incorrect API key"):
        _gen(url).generate(_chats(1))
    assert len(state.requests) == 1  # no retries on auth errors
    monkeypatch.delenv("ALIGNKIT_TEST_KEY")
    with pytest.raises(AuthenticationError, match=r"no API key was sent: set \$ALIGNKIT_TEST_KEY"):
        _gen(url).generate(_chats(1))
    monkeypatch.setenv("ALIGNKIT_TEST_KEY", "sekret")
    assert _gen(url).generate(_chats(1))[0][0].text


def test_unreachable_host_names_the_url_quickly() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    t0 = time.perf_counter()
    with pytest.raises(HTTPGeneratorError, match=rf"cannot reach {url}/chat/completions"):
        _gen(url).generate(_chats(1))
    assert time.perf_counter() - t0 < 5
    assert issubclass(HTTPGeneratorError, AlignkitError)  # the CLI prints it as one clean line


def test_other_4xx_is_not_retried(server) -> None:
    url, state = server
    with pytest.raises(HTTPGeneratorError, match=r"HTTP 400: bad request: messages required"):
        _gen(url).generate([[]])
    assert len(state.requests) == 1


def test_n_samples_and_servers_that_ignore_n(server) -> None:
    url, state = server
    params = SamplingParams(n=3, temperature=0.7, seed=10)
    assert len(_gen(url).generate(_chats(2), params)[1]) == 3 and len(state.requests) == 2
    state.requests.clear()
    state.ignore_n = True
    group = _gen(url).generate(_chats(1), params)[0]
    assert [c.text.split(":")[0] for c in group] == ["echo 0 seed=10", "echo 0 seed=11", "echo 0 seed=12"]
    assert len(state.requests) == 3


def test_token_logprobs_are_returned(server) -> None:
    url, _ = server
    c = _gen(url).generate(_chats(1), SamplingParams(max_tokens=3, logprobs=True))[0][0]
    assert c.token_logprobs == [-0.5, -0.5, -0.5] and c.tokens == 3


def test_choice_logprobs_from_top_logprobs(server) -> None:
    url, state = server
    scores = _gen(url).choice_logprobs(_chats(2), ["A", "B", "Z"])
    a = math.log(math.exp(-0.2) + math.exp(-3.0))  # "A" and " A" pooled
    assert scores[0][0] == pytest.approx(a) and scores[0][1] == pytest.approx(-1.9)
    assert scores[1][2] == -math.inf  # not in the top list
    req = state.requests[0]
    assert (req["max_tokens"], req["logprobs"], req["top_logprobs"], req["temperature"]) == (1, True, 20, 0.0)
    state.logprobs = False
    with pytest.raises(NotImplementedError, match="no top_logprobs"):
        _gen(url).choice_logprobs(_chats(1), ["A", "B"])


def test_model_discovered_from_models_endpoint(server) -> None:
    url, state = server
    gen = _gen(url, model="")
    gen.generate(_chats(1))
    assert state.requests[0]["model"] == "tiny-chat" and gen.name.endswith("::tiny-chat")


def test_backoff_and_retry_after_math() -> None:
    rng = random.Random(0)
    delays = [backoff_delay(a, base_s=1.0, max_s=8.0, rng=rng) for a in range(8) for _ in range(50)]
    assert all(0 <= d <= 8.0 for d in delays)
    assert max(delays[:50]) <= 1.0 and max(delays[50:100]) <= 2.0 and max(delays[-50:]) > 4.0
    assert backoff_delay(0, base_s=1.0, max_s=8.0, rng=rng, retry_after_s=5.0) >= 5.0
    assert backoff_delay(0, base_s=1.0, max_s=8.0, rng=rng, retry_after_s=3600) == 8.0  # capped
    assert retry_after_seconds("2.5") == 2.5 and retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)


def test_parse_spec() -> None:
    assert parse_openai_spec("openai:http://h:8000/v1/::m/x") == ("http://h:8000/v1", "m/x")
    assert parse_openai_spec("https://api.example.com/v1") == ("https://api.example.com/v1", "")
    with pytest.raises(AlignkitError, match="expected openai:http"):
        parse_openai_spec("openai:h:8000")


def test_pairwise_judge_over_http_reads_soft_labels(server) -> None:
    from alignkit.feedback import default_constitution
    from alignkit.feedback.judge import PairwiseJudge, soft_label

    url, state = server
    judge = PairwiseJudge(_gen(url), default_constitution(), principles=["no_harm"])
    j = judge.judge(_chats(1), ["first reply"], ["second reply"])[0]
    p_a = soft_label(math.log(math.exp(-0.2) + math.exp(-3.0)), -1.9)
    c = j.comparisons[0]
    assert c.p_ab == pytest.approx(p_a) and c.p_ba == pytest.approx(p_a)  # this server always says "A"
    assert j.p_first == pytest.approx(0.5) and c.position_consistent is False
    # the two orders are sent concurrently, so either may arrive first
    asked = [r["messages"][-1]["content"] for r in state.requests]
    assert len(asked) == 2 and sum("(A) second reply" in a for a in asked) == 1


# ---- the factory and the vLLM backend (vLLM itself needs a GPU; here only what runs without it) -----


def test_factory_routes_specs(server) -> None:
    from alignkit.errors import ModelError
    from alignkit.generate import get_generator
    from alignkit.generate.vllm_backend import vllm_available

    url, _ = server
    gen = get_generator(f"openai:{url}::tiny-chat", max_retries=0)
    assert isinstance(gen, OpenAIHTTPGenerator) and gen.model == "tiny-chat"
    assert get_generator("tiny-random-llama", batch_size=3).batch_size == 3
    if not vllm_available():
        with pytest.raises(ModelError, match=r"needs vLLM, which is not installed.*alignkit\[vllm\]"):
            get_generator("vllm:some/model")
    with pytest.raises(ValueError, match="empty generator spec"):
        get_generator("  ")


def test_vllm_output_mapping_helpers() -> None:
    from types import SimpleNamespace as NS

    from alignkit.generate.vllm_backend import _completion, _sum_prompt_logprobs

    lp = lambda v: NS(logprob=v)  # noqa: E731 - the shape of vllm.sequence.Logprob
    ids = [5, 6, 7, 8]
    prompt_logprobs = [None, {6: lp(-0.1)}, {7: lp(-0.5), 9: lp(-0.2)}, {8: lp(-1.0)}]
    assert _sum_prompt_logprobs(prompt_logprobs, ids, 2) == pytest.approx(-1.5)
    assert _sum_prompt_logprobs([None, {}, {}, {}], ids, 2) == -math.inf
    out = NS(text=" hi ", token_ids=[3, 4], finish_reason="length", logprobs=[{3: lp(-0.3)}, {4: lp(-0.7), 1: lp(-2)}])
    c = _completion(out, prompt_tokens=11, seconds=0.5)
    assert (c.text, c.tokens, c.finish_reason, c.token_logprobs, c.prompt_tokens) == ("hi", 2, "length", [-0.3, -0.7], 11)
