"""Reward from trained reward models: plain `transformers` sequence-classification checkpoints.

A reward model is what `alignkit train rm` writes (or any `AutoModelForSequenceClassification` with a
chat template): the prompt plus the completion are rendered with the chat template and the score is read
at the last token. Several models, or one model with several heads (`num_labels > 1`, as written by
`alignkit train rm heads=K`), form an ensemble: the reward is the members' mean and their spread is
reported as `disagreement` for the reward-hacking monitors.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from alignkit.errors import ModelError
from alignkit.generate.base import Chat
from alignkit.rewards.base import RewardResult

__all__ = ["RewardModelScorer", "load_reward_model"]


def load_reward_model(path: str, device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) from a reward-model directory; clear errors for the usual mistakes."""
    from pathlib import Path

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    directory = Path(path)
    if (directory / "adapter_config.json").is_file():
        raise ModelError(f"{path} holds a LoRA adapter; a reward model must be a full sequence-classification "
                         "model (alignkit train rm merges its adapters before saving)")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(path))
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load reward model {path!r}: {exc}") from exc
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    return model.to(device).eval().requires_grad_(False), tok


class RewardModelScorer:
    """Scores (prompt, completion) with one or more reward models; mean and spread over all heads."""

    def __init__(self, members: Sequence[tuple[Any, Any]], *, name: str = "reward_model", batch_size: int = 8,
                 max_tokens: int = 1024) -> None:
        if not members:
            raise ValueError("a reward-model scorer needs at least one model")
        self.members, self.name = list(members), name
        self.batch_size, self.max_tokens = batch_size, max_tokens

    @classmethod
    def load(cls, paths: Sequence[str], *, device: str = "cpu", **kw: Any) -> "RewardModelScorer":
        from pathlib import Path

        name = kw.pop("name", None) or "rm:" + ",".join(Path(p).parent.name or Path(p).name for p in paths)
        return cls([load_reward_model(p, device) for p in paths], name=name, **kw)

    def _render(self, tok: Any, prompt: Chat, completion: str) -> list[int]:
        text = tok.apply_chat_template([*prompt, {"role": "assistant", "content": completion}], tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return ids[-self.max_tokens :]  # keep the end: the score is read at the last token

    def member_scores(self, prompts: Sequence[Chat], completions: Sequence[str]) -> Any:
        """(members x heads, n) scores from every head of every model."""
        import torch

        rows = []
        for model, tok in self.members:
            seqs = [self._render(tok, p, c) for p, c in zip(prompts, completions)]
            out = []
            for s in range(0, len(seqs), self.batch_size):
                out.append(score_ids(model, seqs[s : s + self.batch_size], tok.pad_token_id))
            rows.append(torch.cat(out).T if out else torch.zeros(model.config.num_labels, 0))  # (heads, n)
        return torch.cat(rows)

    def __call__(self, prompts: Sequence[Chat], completions: Sequence[str],
                 meta: Sequence[Mapping[str, Any]]) -> RewardResult:
        from alignkit.losses.reward import ensemble_disagreement

        scores = self.member_scores(prompts, completions)  # (K, n)
        spread = ensemble_disagreement(scores) if scores.shape[0] > 1 else None
        return RewardResult(scores=scores.mean(0).tolist(), disagreement=None if spread is None else spread.tolist())


def score_ids(model: Any, seqs: Sequence[Sequence[int]], pad_id: int) -> Any:
    """(b, num_labels) scores at the last real token of each right-padded sequence (inference mode)."""
    import torch

    device = next(model.parameters()).device
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    lengths = mask.sum(1) - 1
    with torch.inference_mode():
        # read the head at our own last-token index rather than the model's pad-id heuristic, which
        # would stop early if the pad id also ends the reply (e.g. pad = eos = <|im_end|>)
        base = getattr(model, model.base_model_prefix)
        hidden = base(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state  # (b, T, D)
        last = hidden[torch.arange(len(seqs), device=device), lengths.to(device)]  # (b, D)
        return _head(model)(last).float().cpu()


def _head(model: Any) -> Any:
    """The scalar head of a sequence-classification model (`score` on Llama-like models)."""
    for name in ("score", "classifier"):
        head = getattr(model, name, None)
        if head is not None:
            return head
    raise ModelError(f"{type(model).__name__} has no 'score' or 'classifier' head")
