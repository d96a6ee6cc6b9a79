"""The packed log-likelihood scorer equals one plain forward per choice, whatever the batching."""

from __future__ import annotations

import logging

import pytest
import torch
from test_evals_fixtures import one_thread  # noqa: F401 (autouse fixture)

from alignkit.evals.loglik import LoglikRequest, LoglikScorer, encode_pair
from alignkit.models.tiny import tiny_model_and_tokenizer


@pytest.fixture(scope="module")
def tiny():
    model, tok = tiny_model_and_tokenizer()
    return model.eval(), tok


REQUESTS = [
    LoglikRequest("Question: what is water?\nAnswer:", (" a liquid", " fire", " The quick brown fox jumps")),
    LoglikRequest("Sure, here is how", (" to sort", " ok")),
    LoglikRequest("", (" hello world",)),
    LoglikRequest("I can't help with that ", ("because", "now")),  # trailing space moves to the continuation
    LoglikRequest("Water boils at 100 degrees Celsius at sea level. " * 3, (" Yes", " No", " Maybe not")),
]


def _prefix(tok) -> int:
    return next(i for i in (tok.bos_token_id, tok.eos_token_id) if i is not None)


def naive(model, tok, req: LoglikRequest) -> list[float]:
    """One plain forward of context + continuation per choice, full logits: lm-eval's computation."""
    out = []
    for cont in req.continuations:
        ctx, cont_ids = encode_pair(tok, req.context, cont, _prefix(tok))
        ids = torch.tensor([ctx + cont_ids])
        with torch.no_grad():
            lp = model(ids).logits.float().log_softmax(-1)[0]
        out.append(sum(lp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont_ids)))
    return out


def test_encode_pair_follows_lm_eval(tiny):
    _, tok = tiny
    ctx, cont = encode_pair(tok, "Answer: ", "yes", _prefix(tok))
    assert ctx == tok("Answer:", add_special_tokens=False)["input_ids"]
    assert ctx + cont == tok("Answer: yes", add_special_tokens=False)["input_ids"]
    ctx, cont = encode_pair(tok, "", "hello", _prefix(tok))
    assert ctx == [_prefix(tok)] and cont == tok("hello", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("mode,row_tokens,tokens_per_batch", [
    ("packed", 1024, 4096), ("packed", 16, 32), ("packed", 64, 64), ("plain", 1024, 4096), ("plain", 8, 8)])
def test_scores_match_a_plain_forward_for_any_batching(tiny, mode, row_tokens, tokens_per_batch):
    model, tok = tiny
    scorer = LoglikScorer(model, tok, mode=mode, row_tokens=row_tokens, tokens_per_batch=tokens_per_batch)
    results = scorer.score(REQUESTS)
    for req, res in zip(REQUESTS, results):
        assert res.logprobs == pytest.approx(naive(model, tok, req), abs=1e-4)
        assert res.tokens == [len(encode_pair(tok, req.context, c, _prefix(tok))[1]) for c in req.continuations]
    assert scorer.mode == mode


def test_packing_scores_fewer_tokens_than_one_row_per_choice(tiny):
    model, tok = tiny
    packed, plain = LoglikScorer(model, tok), LoglikScorer(model, tok, mode="plain")
    packed.score(REQUESTS)
    plain.score(REQUESTS)
    assert packed.tokens_scored < plain.tokens_scored


def test_greedy_flag(tiny):
    model, tok = tiny
    ctx = "The quick brown fox jumps over the lazy"
    ids = tok(ctx, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        top = int(model(torch.tensor([ids])).logits[0, -1].argmax())
    res = LoglikScorer(model, tok).score([LoglikRequest(ctx, (tok.decode([top]),))])[0]
    assert res.greedy == [True]


class _IgnoresMasks(torch.nn.Module):
    """A model whose attention ignores custom masks and position ids (like some remote-code models)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, **_):
        if attention_mask is not None and attention_mask.dim() == 2:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep)
        return self.inner(input_ids=input_ids, logits_to_keep=logits_to_keep)


def test_falls_back_to_plain_when_4d_masks_are_ignored(tiny, caplog):
    model, tok = tiny
    scorer = LoglikScorer(_IgnoresMasks(model), tok, row_tokens=4096)
    with caplog.at_level(logging.WARNING):
        results = scorer.score(REQUESTS)
    assert scorer.mode == "plain" and "4D masks" in caplog.text
    for req, res in zip(REQUESTS, results):
        assert res.logprobs == pytest.approx(naive(model, tok, req), abs=1e-4)


def test_rejects_empty_continuations(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="tokenizes to nothing"):
        LoglikScorer(model, tok).score([LoglikRequest("context", ("",))])
