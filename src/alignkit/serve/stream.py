"""Output rails on a streamed reply: nothing reaches the client before the text containing it is checked.

`StreamGuard.feed(delta)` buffers the model's text; every `window_chars` new characters it runs the
output rails on everything generated so far and releases the checked part, minus a short hold-back at
the end (so a card number or email split across two checks is redacted whole before any of it is sent).
A block stops the stream with the refusal; `finish()` checks and releases the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alignkit.safety.decision import Decision

__all__ = ["StreamGuard", "StreamStep"]


@dataclass
class StreamStep:
    text: str  # to send now (may be empty)
    decision: Decision | None = None  # set when the rails blocked: `text` is then the refusal


class StreamGuard:
    def __init__(self, guard: Any, prompt: str | None, window_chars: int = 120, holdback_chars: int = 48) -> None:
        self.guard, self.prompt = guard, prompt
        self.window, self.holdback = window_chars, holdback_chars
        self.raw = ""  # everything the model produced
        self.sent = ""  # what the client has received
        self._checked = 0  # len(raw) at the last check
        self.checks = 0
        self.last: Decision | None = None

    def feed(self, delta: str) -> StreamStep:
        self.raw += delta
        if len(self.raw) - self._checked < self.window:
            return StreamStep("")
        return self._check(final=False)

    def finish(self) -> StreamStep:
        if self._checked == len(self.raw) and self.last is not None and len(self.sent) >= len(self._visible()):
            return StreamStep("")
        return self._check(final=True)

    def _visible(self) -> str:
        d = self.last
        return d.text if d is not None and d.action == "rewrite" else self.raw

    def _check(self, final: bool) -> StreamStep:
        self.last = d = self.guard.check_output(self.raw, prompt=self.prompt)
        self._checked, self.checks = len(self.raw), self.checks + 1
        if d.blocked:
            return StreamStep(("\n\n" if self.sent else "") + d.text, d)
        visible = self._visible()
        end = len(visible)
        if not final:  # hold back the tail, cut at a space, so a split word or number is checked whole
            cut = visible.rfind(" ", 0, max(0, len(visible) - self.holdback))
            end = max(cut, len(self.sent))
        # if a redaction reached back into text already sent (longer than the hold-back), what was sent
        # stays sent: the rest continues from the same offset of the redacted text
        new = visible[len(self.sent) : end]
        self.sent += new
        return StreamStep(new)
