"""LocalGenerator: batching must not change greedy output, n samples, log-probs, choice scoring."""

from __future__ import annotations

import pytest
import torch

from alignkit.generate import Generator, LocalGenerator, SamplingParams
from alignkit.models.tiny import tiny_model_and_tokenizer

CHATS = [[{"role": "user", "content": "Tell me about rain."}],
         [{"role": "user", "content": "Sort a list in Python, please, with an example of sorted()."}],
         [{"role": "user", "content": "Hi"}]]


@pytest.fixture(scope="module")
def gen():
    model, tok = tiny_model_and_tokenizer(seed=3)
    return LocalGenerator(model, tok, batch_size=2)


def test_is_a_generator(gen):
    assert isinstance(gen, Generator)


def test_greedy_output_does_not_depend_on_batch_size(gen):
    params = SamplingParams(max_tokens=12)
    together = [g[0].text for g in gen.generate(CHATS, params)]
    alone = [LocalGenerator(gen.model, gen.tokenizer, batch_size=1).generate([c], params)[0][0].text for c in CHATS]
    assert together == alone


def test_n_samples_and_token_logprobs(gen):
    out = gen.generate(CHATS[:2], SamplingParams(max_tokens=8, temperature=1.0, n=3, logprobs=True, seed=1))
    assert [len(g) for g in out] == [3, 3]
    for c in out[0]:
        assert c.token_logprobs is not None and len(c.token_logprobs) == c.tokens
        assert all(lp <= 0 for lp in c.token_logprobs)
        assert c.finish_reason in ("stop", "length")
    again = gen.generate(CHATS[:2], SamplingParams(max_tokens=8, temperature=1.0, n=3, logprobs=True, seed=1))
    assert [c.text for c in out[0]] == [c.text for c in again[0]]  # seeded


def test_choice_logprobs_match_a_direct_forward(gen):
    tok, model = gen.tokenizer, gen.model
    scores = gen.choice_logprobs(CHATS[:2], [" A", " B", "rain"])
    prompt = tok(tok.apply_chat_template(CHATS[0], tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    choice = tok("rain", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + choice])).logits[0].log_softmax(-1)
    expected = sum(float(logits[len(prompt) - 1 + k, t]) for k, t in enumerate(choice))
    assert scores[0][2] == pytest.approx(expected, abs=1e-4)
    assert len(scores) == 2 and all(len(row) == 3 for row in scores)


def test_bad_params_are_rejected():
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(n=2)
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=0)


def test_bf16_decoding_copy_follows_in_place_updates():
    from alignkit.train.loop import cpu_has_fast_bf16

    model, tok = tiny_model_and_tokenizer(seed=1)
    auto = LocalGenerator(model, tok, generation_dtype="auto")
    fp32 = LocalGenerator(model, tok, generation_dtype="fp32")
    assert fp32._decoder_model() is model
    twin = auto._decoder_model()
    if not cpu_has_fast_bf16():
        assert twin is model
        return
    assert twin is not model and next(twin.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # the model itself is untouched
    assert auto._decoder_model() is twin  # cached while the weights do not change
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # what an optimizer step does
    assert auto._decoder_model() is not twin
    out = auto.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_tokens=4))
    assert len(out) == 1 and out[0][0].tokens <= 4
    with pytest.raises(ValueError, match="generation_dtype"):
        LocalGenerator(model, tok, generation_dtype="fp16")
