import pytest
import torch

from alignkit.losses.logprobs import reference_token_logprobs, token_logprobs


def _dense(h, w, y):
    return (h @ w.T).float().log_softmax(-1).gather(1, y[:, None]).squeeze(1)


@pytest.mark.parametrize("keep", [True, False], ids=["kept-from-forward", "recomputed"])
@pytest.mark.parametrize("rows,chunk", [(37, 8), (150, 1024), (150, 100)])
def test_matches_dense_log_softmax_and_its_gradients(rows, chunk, keep, monkeypatch):
    """Chunks smaller than, spanning and not aligned with the inner SUB_ROWS blocks all give the dense result, with the
    gradient block kept from the forward (small N x V) or recomputed in the backward (large)."""
    import alignkit.losses.logprobs as module

    monkeypatch.setattr(module, "KEEP_GRAD_BYTES", module.KEEP_GRAD_BYTES if keep else 0)
    torch.manual_seed(0)
    h = torch.randn(rows, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 50, (rows,))
    g = torch.randn(rows, dtype=torch.float64)

    ref = _dense(h, w, y).double()
    (gh_ref, gw_ref) = torch.autograd.grad((ref * g).sum(), (h, w))
    out = token_logprobs(h, w, y, chunk_size=chunk)
    (gh, gw) = torch.autograd.grad((out.double() * g).sum(), (h, w))

    torch.testing.assert_close(out.double(), ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(gh, gh_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw, gw_ref, atol=1e-5, rtol=1e-5)


def test_gradcheck_small():
    torch.manual_seed(1)
    h = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 7, (5,))
    # float32 output: compare with a loose tolerance through a float64 cast of the inputs' grads
    assert torch.autograd.gradcheck(lambda a, b: token_logprobs(a, b, y, chunk_size=2), (h, w),
                                    eps=1e-6, atol=1e-4)


def test_frozen_weight_gets_no_gradient_and_reference_path_matches():
    torch.manual_seed(2)
    h = torch.randn(9, 8, requires_grad=True)
    w = torch.randn(11, 8)  # frozen LM head, as under LoRA
    y = torch.randint(0, 11, (9,))
    out = token_logprobs(h, w, y, chunk_size=4)
    out.sum().backward()
    assert h.grad is not None and w.grad is None
    torch.testing.assert_close(reference_token_logprobs(h.detach(), w, y, chunk_size=3), out.detach())


def test_log_probs_are_normalized():
    torch.manual_seed(3)
    h, w = torch.randn(3, 4), torch.randn(6, 4)
    total = torch.stack([token_logprobs(h, w, torch.full((3,), v)).exp() for v in range(6)]).sum(0)
    torch.testing.assert_close(total, torch.ones(3))


def test_empty_input():
    assert token_logprobs(torch.zeros(0, 4), torch.zeros(6, 4), torch.zeros(0, dtype=torch.long)).shape == (0,)


@pytest.mark.parametrize("keep", [True, False], ids=["kept-from-forward", "recomputed"])
def test_backward_under_bf16_autocast_runs_in_bf16_and_stays_close(keep, monkeypatch):
    """The custom backward follows the forward's autocast dtype (autocast itself does not reach it)."""
    import alignkit.losses.logprobs as module

    monkeypatch.setattr(module, "KEEP_GRAD_BYTES", module.KEEP_GRAD_BYTES if keep else 0)
    torch.manual_seed(0)
    h = torch.randn(12, 16, requires_grad=True)
    w = torch.randn(40, 16, requires_grad=True)
    y = torch.randint(0, 40, (12,))
    token_logprobs(h, w, y, chunk_size=5).sum().backward()
    g32 = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = token_logprobs(h, w, y, chunk_size=5)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert h.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    # bf16 has 8 mantissa bits: agreement to ~1e-2 relative, far from fp32 exactness but the same gradient
    torch.testing.assert_close(h.grad, g32[0], atol=0.15, rtol=0.05)
    torch.testing.assert_close(w.grad, g32[1], atol=0.15, rtol=0.05)
    assert not torch.equal(h.grad, g32[0])  # the bf16 path really ran


def test_kept_and_recomputed_gradient_blocks_agree_under_bf16_autocast(monkeypatch):
    """The two backward paths compute the same q = softmax - onehot (fp32 inside, bf16 stored): near-equal grads."""
    import alignkit.losses.logprobs as module

    torch.manual_seed(3)
    h = torch.randn(90, 16, requires_grad=True)
    w = torch.randn(300, 16, requires_grad=True)
    y = torch.randint(0, 300, (90,))
    grads = []
    for limit in (module.KEEP_GRAD_BYTES, 0):
        monkeypatch.setattr(module, "KEEP_GRAD_BYTES", limit)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = token_logprobs(h, w, y, chunk_size=40)
        grads.append(torch.autograd.grad(out.sum(), (h, w)))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-2, rtol=1e-2)
