"""alignkit_sdpa: the CPU attention the trainers use gives transformers' sdpa results and saves as plain sdpa."""

import pytest
import torch

from alignkit.data.batch import block_causal_mask
from alignkit.models.attention import ATTENTION_NAME, use_fast_cpu_attention
from alignkit.models.tiny import tiny_model, tiny_model_and_tokenizer


def _pair(seed: int = 0):
    """Two models with the same weights (GQA: 4 query heads, 2 key/value heads), one switched to alignkit_sdpa."""
    a, b = tiny_model(300, seed=seed), tiny_model(300, seed=seed)
    assert use_fast_cpu_attention(b) and b.config._attn_implementation == ATTENTION_NAME
    return a, b


def _packed_inputs():
    """Two rows, each two segments, one padded; the mask is the 4-D block-causal one the DPO batches carry."""
    torch.manual_seed(0)
    ids = torch.randint(3, 300, (2, 12))
    segment = [torch.tensor([0] * 5 + [1] * 7), torch.tensor([0] * 8 + [-1] * 4)]
    mask = torch.cat([block_causal_mask(s) for s in segment])
    pos = torch.stack([torch.cat([torch.arange(5), torch.arange(7)]), torch.cat([torch.arange(8), torch.zeros(4).long()])])
    return ids, pos, mask


def test_fp32_results_are_identical_to_sdpa_with_packed_masks_and_padding():
    a, b = _pair()
    ids, pos, mask = _packed_inputs()
    with torch.no_grad():
        torch.testing.assert_close(b(ids, position_ids=pos, attention_mask=mask).logits,
                                   a(ids, position_ids=pos, attention_mask=mask).logits, rtol=0, atol=0)
        padded = torch.ones(2, 12, dtype=torch.long)
        padded[1, :4] = 0  # left padding, transformers builds the mask
        torch.testing.assert_close(b(ids, attention_mask=padded).logits[:, 4:], a(ids, attention_mask=padded).logits[:, 4:],
                                   rtol=0, atol=0)


def test_gradients_match_sdpa_and_bf16_autocast_runs_attention_in_fp32(monkeypatch):
    a, b = _pair()
    ids, pos, mask = _packed_inputs()
    for m in (a, b):
        m(ids, position_ids=pos, attention_mask=mask).logits.float().pow(2).mean().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-5, atol=1e-6, msg=name)

    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q.dtype, k.dtype, v.dtype, k.shape[1] < q.shape[1], kw.get("enable_gqa")))
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = b(ids, position_ids=pos, attention_mask=mask).logits.float()
    with torch.no_grad():
        exact = b(ids, position_ids=pos, attention_mask=mask).logits
    # both layers: fp32 inputs under bf16 autocast, key/value heads not repeated (grouped-query attention in the kernel)
    assert seen[:2] == [(torch.float32, torch.float32, torch.float32, True, True)] * 2
    torch.testing.assert_close(low.detach(), exact, rtol=0.05, atol=0.05)


def test_generation_decodes_like_sdpa():
    a, b = _pair(seed=3)
    prompt = torch.randint(3, 300, (1, 7))
    ga = a.generate(prompt, max_new_tokens=6, do_sample=False)
    gb = b.generate(prompt, max_new_tokens=6, do_sample=False)
    assert torch.equal(ga, gb)


def test_saved_model_loads_with_plain_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok = tiny_model_and_tokenizer()
    use_fast_cpu_attention(model)
    model.save_pretrained(tmp_path)
    assert "alignkit" not in (tmp_path / "config.json").read_text()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.config._attn_implementation == "sdpa"


def test_only_sdpa_models_are_switched():
    model = tiny_model(300)
    model.set_attn_implementation("eager")
    assert not use_fast_cpu_attention(model)
    assert model.config._attn_implementation == "eager"


def test_load_model_switches_cpu_models():
    from alignkit.models.load import ModelConfig, load_model

    loaded = load_model(ModelConfig(name="tiny-random-llama", device="cpu"))
    assert loaded.model.config._attn_implementation == ATTENTION_NAME


def test_per_segment_attention_equals_block_masked_attention_over_the_row():
    """Spans passed as alignkit_segments: same outputs and gradients as one attention over the row under the
    block-causal mask, without any attention across spans (and a trailing padding span)."""
    from alignkit.data.batch import pack_conversations
    from alignkit.data.template import TokenizedConversation
    from alignkit.models.attention import SEGMENTS_KWARG

    model = tiny_model(300, seed=4)
    use_fast_cpu_attention(model)
    torch.manual_seed(0)
    examples = [TokenizedConversation(input_ids=torch.randint(3, 300, (n,)).tolist(), loss_mask=[True] * n, source="test")
                for n in (5, 9, 3)]
    batch = pack_conversations(examples)
    assert batch.segments == ((0, 5), (5, 14), (14, 17))
    outs, grads = [], []
    for extra in ({}, {SEGMENTS_KWARG: batch.segments}):
        model.zero_grad()
        out = model(batch.input_ids, position_ids=batch.position_ids, attention_mask=batch.attention_mask, **extra).logits
        out.pow(2).mean().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("segments", [((0, 5), (6, 17)), ((0, 5), (5, 16)), ((0, 5), (5, 5), (5, 17))])
def test_spans_that_do_not_tile_the_row_are_an_error(segments):
    from alignkit.models.attention import SEGMENTS_KWARG

    model = tiny_model(300)
    use_fast_cpu_attention(model)
    with pytest.raises(ValueError, match="must tile one row of 17 tokens"):
        model(torch.randint(3, 300, (1, 17)), **{SEGMENTS_KWARG: segments})


def test_per_span_masks_replace_the_row_mask_and_must_match_the_spans():
    from alignkit.data.batch import block_causal_mask
    from alignkit.models.attention import SEGMENT_MASKS_KWARG, SEGMENTS_KWARG

    model = tiny_model(300, seed=2)
    use_fast_cpu_attention(model)
    ids = torch.randint(3, 300, (1, 9))
    spans = ((0, 4), (4, 9))
    row_mask = block_causal_mask(torch.tensor([0] * 4 + [1] * 5))
    span_masks = tuple(torch.ones(b - a, b - a, dtype=torch.bool).tril()[None, None] for a, b in spans)
    pos = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4]])
    with torch.no_grad():
        sliced = model(ids, position_ids=pos, attention_mask=row_mask, **{SEGMENTS_KWARG: spans}).logits
        given = model(ids, position_ids=pos, attention_mask=row_mask,
                      **{SEGMENTS_KWARG: spans, SEGMENT_MASKS_KWARG: span_masks}).logits
        torch.testing.assert_close(given, sliced, rtol=0, atol=0)
        with pytest.raises(ValueError, match="1 masks for 2 spans"):
            model(ids, position_ids=pos, attention_mask=row_mask,
                  **{SEGMENTS_KWARG: spans, SEGMENT_MASKS_KWARG: span_masks[:1]})
