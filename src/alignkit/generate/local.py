"""Batched generation with a local transformers model (left padding, KV cache)."""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["generate_local"]


def generate_local(model: Any, tokenizer: Any, conversations: Sequence[Sequence[dict[str, str]]], *,
                   max_new_tokens: int = 128, batch_size: int = 8, temperature: float = 0.0,
                   top_p: float = 1.0, seed: int = 0) -> list[str]:
    """Generate one reply per conversation (a list of {"role", "content"} dicts ending with a user turn).

    Greedy when temperature == 0. Prompts are rendered with the tokenizer's chat template.
    """
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    replies: list[str] = []
    try:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        for start in range(0, len(conversations), batch_size):
            chunk = conversations[start : start + batch_size]
            texts = [tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True) for c in chunk]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id}
            if temperature > 0:
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.inference_mode():
                out = model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1] :]
            replies.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return [r.strip() for r in replies]
