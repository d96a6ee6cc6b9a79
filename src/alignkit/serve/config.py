"""`ServeConfig`: everything `alignkit serve` takes, as one typed, validated config."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ServeConfig"]


@dataclass(frozen=True)
class ServeConfig:
    model: str | None = field(default=None, metadata={"help": "local model: built-in name, directory, hub id, .gguf"})
    upstream: str | None = field(default=None, metadata={"help": "proxy this OpenAI-compatible base URL (.../v1)"})
    upstream_model: str | None = field(default=None, metadata={"help": "model name to request upstream"})
    upstream_key_env: str = field(default="UPSTREAM_API_KEY", metadata={"help": "env var with the upstream key"})
    served_name: str | None = field(default=None, metadata={"help": "model id in /v1/models (default: the model)"})
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    guard: bool = field(default=True, metadata={"help": "run the input and output rails"})
    policy: str | None = field(default=None, metadata={"help": "guard policy YAML (default: shipped)"})
    system_prompt: bool = field(default=True, metadata={"help": "add the constitution as the system prompt"})
    constitution: str | None = field(default=None, metadata={"help": "constitution YAML (default: shipped)"})
    system_prompt_hazards: bool = field(default=False, metadata={"help": "also list the hazards in the system "
                                        "prompt (~2x longer prompt: slower on CPU; the rails cover them anyway)"})
    api_keys_env: str = field(default="ALIGNKIT_API_KEYS", metadata={"help": "env var: comma-separated API keys"})
    api_keys_file: str | None = field(default=None, metadata={"help": "file with one API key per line"})
    no_auth: bool = field(default=False, metadata={"help": "serve without API keys (loopback testing only)"})
    max_request_bytes: int = field(default=65536, metadata={"help": "larger bodies get 413"})
    max_tokens_limit: int = field(default=512, metadata={"help": "max_tokens above this gets 400"})
    default_max_tokens: int = 256
    requests_per_minute: int = field(default=120, metadata={"help": "per API key; 0 = unlimited"})
    burst: int = field(default=20, metadata={"help": "requests a key may make at once before the rate applies"})
    stream_window_chars: int = field(default=120, metadata={"help": "streaming: output rails run every N chars"})
    concurrency: int = field(default=1, metadata={"help": "generations at once (local model: 1 on CPU)"})
    timeout_s: float = field(default=300.0, metadata={"help": "upstream request timeout"})

    def validate(self) -> None:
        if bool(self.model) == bool(self.upstream):
            raise ValueError("give exactly one of model (serve a local model) or upstream (proxy a URL)")
        if self.upstream and not self.upstream.startswith(("http://", "https://")):
            raise ValueError(f"upstream must be an http(s) URL, got {self.upstream!r}")
        for name in ("max_request_bytes", "max_tokens_limit", "default_max_tokens", "burst",
                     "stream_window_chars", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.requests_per_minute < 0:
            raise ValueError(f"requests_per_minute must be >= 0, got {self.requests_per_minute}")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError("default_max_tokens must not exceed max_tokens_limit")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")

    @property
    def name(self) -> str:
        return self.served_name or self.model or self.upstream_model or "upstream"
