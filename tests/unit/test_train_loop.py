"""Loop pieces: the learning-rate schedule, data order, metrics file on resume, packed DPO layout."""

from __future__ import annotations

import json
import math

import pytest
import torch

from alignkit.errors import ConfigError
from alignkit.train.loop import MetricsSink, lr_at, planned_steps, step_batches, sum_by_owner
from alignkit.train.settings import OptimSettings, RunSettings


def test_warmup_then_cosine_by_hand():
    optim = OptimSettings(warmup_ratio=0.2, schedule="cosine", min_lr_ratio=0.1)
    # total 10 -> 2 warmup steps: multipliers 1/3, 2/3, then cosine over the remaining 8
    assert lr_at(0, 10, optim) == pytest.approx(1 / 3)
    assert lr_at(1, 10, optim) == pytest.approx(2 / 3)
    assert lr_at(2, 10, optim) == pytest.approx(1.0)
    assert lr_at(6, 10, optim) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert lr_at(10, 10, optim) == pytest.approx(0.1)


def test_linear_and_constant_schedules():
    assert lr_at(5, 10, OptimSettings(warmup_ratio=0.0, schedule="linear")) == pytest.approx(0.5)
    assert lr_at(7, 10, OptimSettings(warmup_ratio=0.0, schedule="constant")) == 1.0


def test_planned_steps_and_too_little_data():
    assert planned_steps(100, 8, RunSettings(epochs=2)) == 24  # 12 full steps per epoch
    assert planned_steps(100, 8, RunSettings(max_steps=5)) == 5
    with pytest.raises(ConfigError, match="fewer than one step"):
        planned_steps(3, 8, RunSettings())


def test_data_order_is_a_function_of_seed_and_step():
    full = step_batches(20, 4, seed=3, start_step=0)
    first = [next(full) for _ in range(12)]  # 5 steps per epoch -> crosses two epoch boundaries
    resumed = step_batches(20, 4, seed=3, start_step=7)
    assert [next(resumed) for _ in range(5)] == first[7:]
    assert sorted(i for b in first[:5] for i in b) == list(range(20))  # an epoch covers every record once
    assert first[:5] != first[5:10]  # and the next epoch reshuffles


def test_metrics_file_is_reset_on_a_fresh_run_and_trimmed_on_resume(tmp_path):
    run = RunSettings()
    sink = MetricsSink(tmp_path, run, {}, enabled=True)
    for step in (1, 2, 3):
        sink.log(step, {"loss": 1.0 / step})
    MetricsSink(tmp_path, run, {}, enabled=True, start_step=2)  # resumed from a step-2 checkpoint
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    MetricsSink(tmp_path, run, {}, enabled=True)  # a fresh run
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_sum_by_owner():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    owner = torch.tensor([0, 0, 3, 1])
    assert sum_by_owner(values, owner, 4).tolist() == [3.0, 4.0, 0.0, 3.0]


def test_packed_pair_layout_shares_the_prompt_and_hides_chosen_from_rejected():
    from alignkit.data.batch import pack_pairs
    from alignkit.data.template import TokenizedPair

    pair = TokenizedPair(prompt_ids=[10, 11, 12], chosen_ids=[20, 21], rejected_ids=[30], margin=None, source="")
    b = pack_pairs([pair, pair], [5, 9])
    assert b.input_ids[0, :6].tolist() == [10, 11, 12, 20, 21, 30]
    assert b.position_ids[0, :6].tolist() == [0, 1, 2, 3, 4, 3]  # rejected restarts after the prompt
    mask = b.attention_mask[0, 0]
    assert mask[5, :3].all() and not mask[5, 3:5].any() and mask[5, 5]  # rejected sees prompt, not chosen
    assert not mask[:6, 6:].any()  # the second pair is invisible to the first
    # chosen token 20 is predicted from the last prompt token (2); rejected 30 from there too
    assert b.pred_index[:3].tolist() == [2, 3, 2] and b.targets[:3].tolist() == [20, 21, 30]
    assert b.owner.tolist() == [0, 0, 1, 2, 2, 3] and b.logical_tokens == 2 * (3 + 2 + 3 + 1)
    assert b.index.tolist() == [5, 9]
    assert b.segments == ((0, 6), (6, 12))  # one row: each pair's span, for attention run pair by pair
    padded = pack_pairs([pair, pair], [5, 9], pad_to_multiple_of=16)
    assert padded.input_ids.shape == (1, 16) and padded.segments == ((0, 6), (6, 12), (12, 16))  # padding: own span
    assert pack_pairs([pair, pair], [5, 9], row_tokens=6).segments is None  # two rows: no spans


def test_pairs_split_into_padded_rows_by_token_budget():
    from alignkit.data.batch import pack_pairs
    from alignkit.data.template import TokenizedPair

    short = TokenizedPair(prompt_ids=[10, 11], chosen_ids=[20], rejected_ids=[30], margin=None, source="")
    long = TokenizedPair(prompt_ids=[10, 11, 12, 13], chosen_ids=[20, 21], rejected_ids=[30, 31], margin=None, source="")
    b = pack_pairs([short, short, long], [0, 1, 2], row_tokens=8)  # 4 + 4 fit one row; 8 gets its own
    assert b.input_ids.tolist() == [[10, 11, 20, 30, 10, 11, 20, 30], [10, 11, 12, 13, 20, 21, 30, 31]]
    b = pack_pairs([long, short], [0, 1], row_tokens=8)  # the short pair's row is padded to 8
    assert b.input_ids.shape == (2, 8) and b.input_ids[1, 4:].tolist() == [0, 0, 0, 0]
    mask = b.attention_mask[1, 0]
    assert not mask[:4, 4:].any()  # nothing real sees padding
    assert mask[4:, 4:].diagonal().all()  # padding sees itself (no all-masked rows, no NaN)
    # flattened indices: the short pair's chosen token is predicted at row 1, position 1 -> 8 + 1
    assert b.pred_index.tolist()[-2:] == [9, 9] and b.targets.tolist()[-2:] == [20, 30]


def _two_layer_net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))


@pytest.mark.parametrize("max_norm", [0.05, 1e6, None])
def test_optimizer_step_folds_the_clip_into_fused_adamw_with_torchs_result(max_norm):
    import copy

    from alignkit.train.loop import make_optimizer, make_runtime, make_scheduler, optimizer_step

    rt = make_runtime(RunSettings(precision="fp32", cpu_malloc_tuning=False), "cpu")
    ours = _two_layer_net(0)
    theirs = copy.deepcopy(ours)
    optim = OptimSettings(lr=1e-2, weight_decay=0.1)
    opt_a, opt_b = make_optimizer(ours, optim), make_optimizer(theirs, optim)
    assert opt_a.defaults["fused"]  # the folded path is the one under test
    sched_a, sched_b = make_scheduler(opt_a, 5, optim), make_scheduler(opt_b, 5, optim)
    for step in range(3):
        x = torch.randn(8, 16, generator=torch.Generator().manual_seed(step))
        for net in (ours, theirs):
            net(x).pow(2).sum().backward()
        norm = optimizer_step(rt, ours, opt_a, sched_a, max_norm)
        expected = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm) if max_norm else None
        opt_b.step()
        sched_b.step()
        opt_b.zero_grad(set_to_none=True)
        if max_norm is None:
            assert norm is None
        else:
            assert float(norm) == pytest.approx(float(expected), rel=1e-5)
        for a, b in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
            assert a.grad is None
        assert getattr(opt_a, "grad_scale", None) is None  # not left behind for the next (unclipped) step
    assert sched_a.last_epoch == 3
    moved = [(a - p).abs().max().item() for a, p in zip(ours.parameters(), _two_layer_net(0).parameters())]
    assert max(moved) > 0
    if max_norm == 0.05:  # clipped: each step moves weights by ~lr at most, unclipped Adam moves them the same way
        assert float(norm) > 0.05


def test_cpu_malloc_tuning_applies_on_glibc():
    import platform

    from alignkit.train.loop import tune_cpu_malloc

    on_glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert tune_cpu_malloc() is on_glibc


def test_tied_embedding_gradient_is_accumulated_sparsely_with_the_same_result():
    from alignkit.models.tiny import tiny_model
    from alignkit.train.loop import TokenLogprobs

    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(0))
    mask, positions = torch.ones(1, 12, dtype=torch.long), torch.arange(12)[None]
    model = tiny_model(64, seed=3)
    module, embed = TokenLogprobs(model), model.get_input_embeddings()
    assert embed.weight is model.get_output_embeddings().weight
    for _ in range(2):  # two micro-batches: the second accumulates into an existing gradient
        module(ids, positions, mask, torch.arange(11), ids[0, 1:]).sum().backward()
        assert not embed.sparse  # the flag is the module's only during its forward
    fast = embed.weight.grad
    assert fast.layout == torch.strided

    plain = tiny_model(64, seed=3)  # the same sums through transformers' own forward and full-vocabulary logits
    for _ in range(2):
        logits = plain(input_ids=ids, position_ids=positions, attention_mask=mask).logits[0, :-1]
        logits.log_softmax(-1).gather(1, ids[0, 1:, None]).sum().backward()
    torch.testing.assert_close(fast, plain.get_input_embeddings().weight.grad, rtol=1e-4, atol=1e-5)

    embed.sparse = True  # a user's own sparse embedding is left as it is
    module(ids, positions, mask, torch.arange(11), ids[0, 1:]).sum().backward()
    assert embed.sparse


def test_total_norm_matches_an_fp64_reference_for_fp32_and_other_gradients():
    from alignkit.train.loop import _total_norm

    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(300, 70, generator=gen), torch.randn(5, generator=gen) * 1e3,
             torch.randn(64, 40, generator=gen).t()]  # a non-contiguous one too
    exact = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    assert float(_total_norm(grads)) == pytest.approx(exact, rel=1e-6)
    assert float(_total_norm([g.bfloat16() for g in grads])) == pytest.approx(exact, rel=1e-2)  # torch's norm path
    assert float(_total_norm([])) == 0.0
