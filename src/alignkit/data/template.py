"""Chat templating, assistant-only loss masks and explicit truncation.

The tokenizer's own chat template renders the text, which is then tokenized without special tokens (the
template already emits any BOS). Assistant tokens are found without `{% generation %}` support: the
tokens between rendering messages[:i] with the generation header and rendering messages[:i+1] are
assistant turn i, checked to be a true token prefix so a template that rewrites earlier turns fails
loudly instead of producing a wrong mask. Imports neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from alignkit.data.records import Conversation, Message, PreferencePair
from alignkit.errors import ConfigError, DataError, ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "TokenizedConversation",
    "TokenizedPair",
    "TruncationStats",
    "Truncation",
    "tokenize_conversation",
    "tokenize_pair",
    "tokenize_conversations",
    "tokenize_pairs",
    "render_prompt",
]

Truncation = Literal["error", "drop", "truncate"]
_POLICIES = ("error", "drop", "truncate")


@dataclass(frozen=True)
class TokenizedConversation:
    input_ids: list[int]
    loss_mask: list[bool]  # True on assistant replies and the end-of-turn markup after each
    source: str


@dataclass(frozen=True)
class TokenizedPair:
    prompt_ids: list[int]  # rendered prompt including the assistant header
    chosen_ids: list[int]  # what the template renders for the chosen reply after the header
    rejected_ids: list[int]
    margin: float | None
    source: str


@dataclass
class TruncationStats:
    total: int = 0
    truncated: int = 0
    dropped: int = 0

    def summary(self) -> str:
        return (f"tokenized {self.total} examples: {self.truncated} truncated, {self.dropped} dropped "
                f"over the token limit")


MessageLike = Message | Mapping[str, Any]


def _dicts(messages: Sequence[MessageLike]) -> list[dict[str, Any]]:
    return [m.to_dict() if isinstance(m, Message) else dict(m) for m in messages]


def _render(tokenizer: PreTrainedTokenizerBase, messages: Sequence[MessageLike], *,
            generation: bool) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}"
                         " has no chat template; use an instruct model's tokenizer or set "
                         "tokenizer.chat_template (e.g. a ChatML template)")
    text = tokenizer.apply_chat_template(_dicts(messages), tokenize=False,
                                         add_generation_prompt=generation)
    # the rendered text already holds any BOS the template emits: never add a second one
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _require_prefix(short: list[int], long: list[int], where: str, what: str) -> None:
    if long[: len(short)] != short:
        at = next((i for i, (a, b) in enumerate(zip(short, long)) if a != b), len(long))
        raise DataError(where, f"the chat template renders {what} differently once more messages follow "
                               f"(tokens differ at position {at}), so the assistant tokens cannot be "
                               "located; does the template rewrite earlier turns?")


def _check_limits(truncation: str, max_tokens: int, max_prompt_tokens: int | None = None) -> None:
    if truncation not in _POLICIES:
        raise ConfigError(f"truncation must be one of {', '.join(_POLICIES)}, got {truncation!r}")
    if max_tokens < 2:
        raise ConfigError(f"max_tokens must be at least 2, got {max_tokens}")
    if max_prompt_tokens is not None and not 0 < max_prompt_tokens < max_tokens:
        raise ConfigError(f"max_prompt_tokens must be in [1, max_tokens={max_tokens}), "
                          f"got {max_prompt_tokens}")


def _masked_ids(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message],
                where: str) -> tuple[list[int], list[bool], int]:
    """(input_ids, loss_mask, start of the last assistant turn)."""
    full = _render(tokenizer, messages, generation=False)
    mask = [False] * len(full)
    last_start = -1
    for i, msg in enumerate(messages):
        if msg.role != "assistant":
            continue
        if i == 0:
            raise DataError(where, "conversation starts with an assistant turn; expected a user turn first")
        before = _render(tokenizer, messages[:i], generation=True)
        after = full if i == len(messages) - 1 else _render(tokenizer, messages[: i + 1], generation=False)
        _require_prefix(before, after, where, f"the prompt before message {i}")
        _require_prefix(after, full, where, f"messages 0..{i}")
        if len(after) == len(before) or not msg.content.strip():
            raise DataError(where, f"assistant message {i} renders to no tokens; nothing to train on")
        mask[len(before): len(after)] = [True] * (len(after) - len(before))
        last_start = len(before)
    if last_start < 0:
        raise DataError(where, "conversation has no assistant turn; the loss mask would be empty")
    return full, mask, last_start


def _truncate_conversation(ids: list[int], mask: list[bool], start: int,
                           max_tokens: int) -> tuple[list[int], list[bool]]:
    # keep the end of the context and the start of the final reply; the context gets at least half
    # the budget (if it is that long) so a very long reply still has something to answer
    keep_prompt = min(start, max(max_tokens - (len(ids) - start), max_tokens // 2))
    lo, hi = start - keep_prompt, start + (max_tokens - keep_prompt)
    return ids[lo:hi], mask[lo:hi]


def tokenize_conversation(tokenizer: PreTrainedTokenizerBase, conv: Conversation, *, max_tokens: int,
                          truncation: Truncation = "truncate",
                          stats: TruncationStats | None = None) -> TokenizedConversation | None:
    """Token ids and an assistant-only loss mask for one SFT conversation; None when dropped."""
    _check_limits(truncation, max_tokens)
    where = conv.source or "<conversation>"
    stats = stats if stats is not None else TruncationStats()
    ids, mask, last_start = _masked_ids(tokenizer, conv.messages, where)
    stats.total += 1
    if len(ids) > max_tokens:
        if truncation == "error":
            raise DataError(where, f"{len(ids)} tokens exceed max_tokens={max_tokens}; raise max_tokens "
                                   "or set truncation to 'drop' or 'truncate'")
        if truncation == "drop":
            stats.dropped += 1
            return None
        ids, mask = _truncate_conversation(ids, mask, last_start, max_tokens)
        stats.truncated += 1
    if not any(mask):
        raise DataError(where, "no assistant tokens left to train on (empty loss mask)")
    return TokenizedConversation(ids, mask, conv.source)


def _reply_ids(tokenizer: PreTrainedTokenizerBase, prompt: Sequence[Message], reply: Sequence[Message],
               prompt_ids: list[int], where: str, name: str) -> list[int]:
    full = _render(tokenizer, [*prompt, *reply], generation=False)
    _require_prefix(prompt_ids, full, where, f"the prompt of the {name} reply")
    ids = full[len(prompt_ids):]
    if not ids or not any(m.content.strip() for m in reply):
        raise DataError(where, f"the {name} reply renders to no tokens; nothing to compare")
    return ids


def tokenize_pair(tokenizer: PreTrainedTokenizerBase, pair: PreferencePair, *, max_tokens: int,
                  max_prompt_tokens: int, truncation: Truncation = "truncate",
                  stats: TruncationStats | None = None) -> TokenizedPair | None:
    """Prompt, chosen and rejected ids; len(prompt) + max(len(chosen), len(rejected)) <= max_tokens."""
    _check_limits(truncation, max_tokens, max_prompt_tokens)
    where = pair.source or "<preference pair>"
    stats = stats if stats is not None else TruncationStats()
    prompt = _render(tokenizer, pair.prompt, generation=True)
    chosen = _reply_ids(tokenizer, pair.prompt, pair.chosen, prompt, where, "chosen")
    rejected = _reply_ids(tokenizer, pair.prompt, pair.rejected, prompt, where, "rejected")
    stats.total += 1
    longest = len(prompt) + max(len(chosen), len(rejected))
    if longest > max_tokens or len(prompt) > max_prompt_tokens:
        if truncation == "error":
            raise DataError(where, f"prompt {len(prompt)} + longest reply {longest - len(prompt)} = "
                                   f"{longest} tokens exceed max_tokens={max_tokens} or max_prompt_tokens"
                                   f"={max_prompt_tokens}; raise the limits or set truncation to 'drop' "
                                   "or 'truncate'")
        if truncation == "drop":
            stats.dropped += 1
            return None
        prompt = prompt[-max_prompt_tokens:]  # keep the end: the latest turn and the assistant header
        budget = max_tokens - len(prompt)
        chosen, rejected = chosen[:budget], rejected[:budget]
        stats.truncated += 1
    if not chosen or not rejected:
        raise DataError(where, "a reply is empty after truncation; nothing to compare")
    return TokenizedPair(prompt, chosen, rejected, pair.margin, pair.source)


def tokenize_conversations(tokenizer: PreTrainedTokenizerBase, convs: Iterable[Conversation],
                           **kw: Any) -> tuple[list[TokenizedConversation], TruncationStats]:
    """Tokenize many; dropped ones are left out and counted in the returned stats."""
    stats = TruncationStats()
    out = [tokenize_conversation(tokenizer, conv, stats=stats, **kw) for conv in convs]
    return [t for t in out if t is not None], stats


def tokenize_pairs(tokenizer: PreTrainedTokenizerBase, pairs: Iterable[PreferencePair],
                   **kw: Any) -> tuple[list[TokenizedPair], TruncationStats]:
    """Tokenize many; dropped ones are left out and counted in the returned stats."""
    stats = TruncationStats()
    out = [tokenize_pair(tokenizer, pair, stats=stats, **kw) for pair in pairs]
    return [t for t in out if t is not None], stats


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[MessageLike]) -> list[int]:
    """Prompt ids ending with the assistant generation header, ready for `generate`."""
    return _render(tokenizer, messages, generation=True)
