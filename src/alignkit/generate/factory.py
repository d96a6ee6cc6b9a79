"""One string names any generation backend, so every command takes `--model`/`--judge` the same way.

    get_generator("smollm2-135m-instruct")                     # local transformers (built-in, dir, hub id, .gguf)
    get_generator("local:runs/quickstart/final", device="cpu")  # the same, explicit
    get_generator("openai:http://localhost:8000/v1::Qwen/Qwen2.5-7B-Instruct", concurrency=16)
    get_generator("openai:https://api.openai.com/v1::gpt-4o-mini")   # key from $OPENAI_API_KEY
    get_generator("vllm:Qwen/Qwen2.5-7B-Instruct", gpu_memory_utilization=0.8)

`opts` go to the backend's constructor: LocalGenerator.load (ModelConfig fields such as device, dtype,
plus batch_size), OpenAIHTTPGenerator (concurrency, timeout_s, max_retries, api_key_env, ...) or
VLLMGenerator (vllm.LLM engine options). Backends import their heavy dependencies only when built.
"""

from __future__ import annotations

from typing import Any

from alignkit.generate.base import Generator

__all__ = ["get_generator", "SPEC_HELP"]

SPEC_HELP = ("model name/dir/hub id/.gguf (local), openai:http://host:port/v1::MODEL "
             "(OpenAI-compatible server; key from $OPENAI_API_KEY), or vllm:MODEL")


def get_generator(spec: str, **opts: Any) -> Generator:
    """Build the backend a spec names (see the module docstring)."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty generator spec; expected " + SPEC_HELP)
    if spec.startswith("openai:") or spec.startswith(("http://", "https://")):
        from alignkit.generate.openai_http import OpenAIHTTPGenerator, parse_openai_spec

        url, model = parse_openai_spec(spec)
        return OpenAIHTTPGenerator(url, model, **opts)
    if spec.startswith("vllm:"):
        from alignkit.generate.vllm_backend import VLLMGenerator

        return VLLMGenerator(spec[len("vllm:"):], **opts)
    from alignkit.generate.local import LocalGenerator

    name = spec[len("local:"):] if spec.startswith("local:") else spec
    batch_size = opts.pop("batch_size", None)
    gen = LocalGenerator.load(name, **opts)
    if batch_size is not None:
        gen.batch_size = int(batch_size)
    return gen
