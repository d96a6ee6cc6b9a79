"""API keys (from an environment variable or a file, compared in constant time) and a per-key rate limit."""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from pathlib import Path

from alignkit.errors import ConfigError

__all__ = ["ApiKeys", "RateLimiter", "key_id"]


def key_id(key: str) -> str:
    """A short, non-reversible id for logs and rate-limit buckets (never log the key itself)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class ApiKeys:
    """The accepted keys. `match(presented)` compares against every key with `hmac.compare_digest` and
    never stops early, so the response time does not reveal how much of a key was right, or which key."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @classmethod
    def load(cls, env: str = "ALIGNKIT_API_KEYS", file: str | None = None) -> "ApiKeys":
        keys = [k.strip() for k in os.environ.get(env, "").split(",") if k.strip()]
        if file:
            try:
                lines = Path(file).read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise ConfigError(f"cannot read API keys file {file}: {e}") from None
            keys += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        short = [i for i, k in enumerate(keys) if len(k) < 16]
        if short:
            raise ConfigError(f"API keys must be at least 16 characters (key #{short[0] + 1} from ${env}"
                              f"{' or ' + file if file else ''} is shorter)")
        return cls(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def match(self, presented: str | None) -> str | None:
        """The key id when `presented` is an accepted key, else None."""
        if not presented:
            return None
        candidate = presented.encode()
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(candidate, key)
        return key_id(presented) if ok else None


class RateLimiter:
    """Token bucket per key: `burst` requests at once, refilled at `per_minute` per minute."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate, self.burst = per_minute / 60.0, float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, last time)
        self._lock = threading.Lock()

    def acquire(self, key: str, now: float | None = None) -> float:
        """0.0 when allowed (one token spent), else seconds until a token is available."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
