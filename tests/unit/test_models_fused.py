"""Fused CPU ops (alignkit.models.fused): same numbers as transformers' modules, only inside `active()`."""

from __future__ import annotations

import copy

import pytest
import torch

from alignkit.models import fused
from alignkit.models.tiny import tiny_model


def test_rms_norm_gradients_pass_gradcheck_in_fp64():
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: fused.rms_norm(a, b, 1e-5), (x, w))


def test_rms_norm_matches_transformers_llama_rmsnorm():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(16, eps=1e-6)
    norm.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(3, 7, 16, requires_grad=True)
    grad = torch.randn(3, 7, 16)
    expected = norm(x)
    ex_dx, ex_dw = torch.autograd.grad(expected, (x, norm.weight), grad)
    got = fused.rms_norm(x, norm.weight, norm.variance_epsilon)
    dx, dw = torch.autograd.grad(got, (x, norm.weight), grad)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(dx, ex_dx)
    torch.testing.assert_close(dw, ex_dw, rtol=1e-5, atol=1e-5)


def _loss_and_grads(model, ids):
    out = model(input_ids=ids).logits
    loss = out.float().log_softmax(-1)[0, :-1].gather(1, ids[0, 1:, None]).sum()
    params = [p for p in model.parameters() if p.requires_grad]
    return loss.detach(), torch.autograd.grad(loss, params)


def test_installed_model_matches_transformers_inside_active_and_is_untouched_outside():
    ids = torch.randint(0, 64, (1, 20), generator=torch.Generator().manual_seed(0))
    plain = tiny_model(64, seed=1)
    patched = tiny_model(64, seed=1)
    assert fused.install(patched) == 2 * 2 + 1 + 2  # per layer: 2 norms + attention; final norm; 2 layers
    assert fused.install(patched) == 0 and fused.installed(patched)  # idempotent
    loss, grads = _loss_and_grads(plain, ids)
    outside = _loss_and_grads(patched, ids)  # not active: transformers' own ops, bit for bit
    assert torch.equal(outside[0], loss) and all(torch.equal(a, b) for a, b in zip(outside[1], grads))
    with fused.active():
        inside = _loss_and_grads(patched, ids)
    torch.testing.assert_close(inside[0], loss)
    for a, b in zip(inside[1], grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if torch.cpu._is_avx512_bf16_supported():  # and under bf16 autocast (the CPU training setting)
        with fused.active(), torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = _loss_and_grads(patched, ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16_plain = _loss_and_grads(plain, ids)
        torch.testing.assert_close(bf16[0], bf16_plain[0], rtol=2e-2, atol=0.05)


def test_a_deep_copy_computes_with_its_own_weights():
    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(1))
    model = tiny_model(64, seed=2)
    fused.install(model)
    twin = copy.deepcopy(model)  # what a frozen reference is
    with torch.no_grad():
        twin.model.layers[0].self_attn.k_proj.weight.mul_(3.0)
        twin.model.layers[1].input_layernorm.weight.mul_(0.5)
        with fused.active():
            ours, theirs = model(input_ids=ids).logits, twin(input_ids=ids).logits
        expected = tiny_model(64, seed=2)
        expected.model.layers[0].self_attn.k_proj.weight.mul_(3.0)
        expected.model.layers[1].input_layernorm.weight.mul_(0.5)
        torch.testing.assert_close(theirs, expected(input_ids=ids).logits, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(ours, theirs)


def test_projections_called_out_of_order_fall_back_to_their_own_matmul():
    model = tiny_model(64, seed=3)
    fused.install(model)
    attn = model.model.layers[0].self_attn
    x, y = torch.randn(1, 4, 32), torch.randn(1, 4, 32)
    with fused.active():
        q = attn.q_proj(x)
        k = attn.k_proj(y)  # another input: not the part computed for x
        v = attn.v_proj(x)
    torch.testing.assert_close(q, x @ attn.q_proj.weight.T)
    torch.testing.assert_close(k, y @ attn.k_proj.weight.T)
    torch.testing.assert_close(v, x @ attn.v_proj.weight.T)


def test_lora_wrapped_projections_are_left_alone_but_norms_are_fused():
    from alignkit.models.load import LoraSettings, ModelConfig, load_model

    model = load_model(ModelConfig(name="tiny-random-llama", lora=LoraSettings(rank=4))).model
    assert fused.install(model) == 2 * 2 + 1  # norms only: q/k/v are LoRA layers
    ids = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(2))
    with fused.active():
        model(input_ids=ids).logits.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_token_logprobs_uses_fused_ops_except_under_gradient_checkpointing(checkpointing, monkeypatch):
    from alignkit.models.load import ModelConfig, load_model
    from alignkit.train.loop import TokenLogprobs

    model = load_model(ModelConfig(name="tiny-random-llama", gradient_checkpointing=checkpointing)).model
    module = TokenLogprobs(model)
    seen = []
    real = fused.rms_norm
    monkeypatch.setattr(fused, "rms_norm", lambda *a: seen.append(1) or real(*a))
    model.train()
    ids = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(4))
    lp = module(ids, torch.arange(10)[None], torch.ones(1, 10, dtype=torch.long), torch.arange(9), ids[0, 1:])
    lp.sum().backward()  # under checkpointing the recomputation must match the original pass
    assert bool(seen) is not checkpointing


def test_a_second_wrapper_of_the_same_model_uses_the_same_arithmetic():
    """A reference scorer wraps the policy (adapters disabled) in its own TokenLogprobs: both must run fused."""
    from alignkit.train.loop import TokenLogprobs

    model = tiny_model(64, seed=5)
    first, second = TokenLogprobs(model), TokenLogprobs(model)
    assert first.fused_ops and second.fused_ops
    ids = torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(5))
    args = (ids, torch.arange(9)[None], torch.ones(1, 9, dtype=torch.long), torch.arange(8), ids[0, 1:])
    with torch.no_grad():
        assert torch.equal(first(*args), second(*args))


def test_rotary_passes_gradcheck_and_matches_transformers():
    from transformers.models.llama import modeling_llama

    original = fused._rotary_originals.get(modeling_llama.__name__, modeling_llama.apply_rotary_pos_emb)
    x = torch.randn(1, 3, 6, 8, dtype=torch.float64, requires_grad=True)
    angles = torch.randn(1, 1, 6, 4, dtype=torch.float64)
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    assert torch.autograd.gradcheck(lambda a: fused.rotary(a, cos, sin), (x,))

    q, k = torch.randn(1, 4, 10, 16, requires_grad=True), torch.randn(1, 2, 10, 16, requires_grad=True)
    angles = torch.randn(1, 10, 8)
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    expected = original(q, k, cos, sin)
    got = fused.rotary(q, cos[:, None], sin[:, None]), fused.rotary(k, cos[:, None], sin[:, None])
    weights = torch.randn(1, 4, 10, 16), torch.randn(1, 2, 10, 16)
    grads = [torch.autograd.grad(sum((o * w).sum() for o, w in zip(outs, weights)), (q, k)) for outs in (expected, got)]
    for a, b in zip(expected + grads[0], got + grads[1]):
        torch.testing.assert_close(b, a)


def test_rotary_keeps_transformers_dtypes_under_autocast_style_inputs():
    q = torch.randn(1, 2, 5, 8, dtype=torch.bfloat16, requires_grad=True)  # a bf16 projection output
    cos, sin = torch.rand(1, 1, 5, 8), torch.rand(1, 1, 5, 8)
    out = fused.rotary(q, cos, sin)
    assert out.dtype == torch.float32  # as q * cos promotes
    (grad,) = torch.autograd.grad(out.sum(), q)
    assert grad.dtype == torch.bfloat16


def test_the_patched_rotary_function_is_transformers_own_outside_active():
    from transformers.models.llama import modeling_llama

    fused.install(tiny_model(64, seed=6))
    original = fused._rotary_originals[modeling_llama.__name__]
    assert modeling_llama.apply_rotary_pos_emb is not original
    q, k, cos, sin = torch.randn(1, 2, 5, 8), torch.randn(1, 1, 5, 8), torch.rand(1, 5, 8), torch.rand(1, 5, 8)
    for a, b in zip(modeling_llama.apply_rotary_pos_emb(q, k, cos, sin), original(q, k, cos, sin)):
        assert torch.equal(a, b)


def test_rotary_is_routed_under_lora_too(monkeypatch):
    from alignkit.models.load import LoraSettings, ModelConfig, load_model

    seen = []
    monkeypatch.setattr(fused, "_patch_rotary", seen.append)
    fused.install(load_model(ModelConfig(name="tiny-random-llama", lora=LoraSettings(rank=4))).model)
    assert seen and set(seen) == {"transformers.models.llama.modeling_llama"}
