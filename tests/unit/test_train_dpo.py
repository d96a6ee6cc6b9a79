"""DPO trainer smoke tests on a tiny random Llama: finite loss, parameters change, accumulation
equivalence, exact resume, and a saved model that plain transformers / peft load back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.config import from_dict
from alignkit.data.builtin import resolve_data
from alignkit.train.dpo import DPOConfig, train
from alignkit.train.loop import Checkpointer
from tests.unit.conftest import tiny_base


def _cfg(tmp_path: Path, name: str, pref_file: Path, **extra: object) -> DPOConfig:
    base = {"pairs_per_step": 8, "pairs_per_micro_batch": 4, "sample_prompts": 0}
    base.update(extra)
    return from_dict(DPOConfig, tiny_base(tmp_path / name, pref_file, **base))


def _final_weights(summary: dict) -> dict[str, torch.Tensor]:
    final = Path(summary["final_model"])
    name = "adapter_model.safetensors" if (final / "adapter_config.json").exists() else "model.safetensors"
    return load_file(str(final / name))


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "hinge", "robust", "simpo", "orpo"])
def test_each_loss_trains_with_finite_loss(tmp_path, pref_file, loss):
    extra = {"label_smoothing": 0.1} if loss == "robust" else {}
    summary = train(_cfg(tmp_path, loss, pref_file, loss=loss, **extra))
    rows = [json.loads(line) for line in (tmp_path / loss / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert summary["steps"] == 3


def test_full_finetune_changes_parameters_and_reloads_with_transformers(tmp_path, pref_file):
    from transformers import AutoModelForCausalLM

    from alignkit.models.tiny import tiny_model_and_tokenizer

    initial, _ = tiny_model_and_tokenizer()
    summary = train(_cfg(tmp_path, "full", pref_file))
    reloaded = AutoModelForCausalLM.from_pretrained(summary["final_model"])
    changed = [n for n, p in reloaded.named_parameters() if not torch.equal(p, initial.state_dict()[n])]
    assert len(changed) > 0.9 * len(list(reloaded.parameters()))
    assert (tmp_path / "full" / "config.yaml").is_file()


def test_lora_adapter_reloads_with_peft_and_changes_outputs(tmp_path, pref_file):
    from peft import PeftModel

    from alignkit.models.tiny import tiny_model_and_tokenizer

    summary = train(_cfg(tmp_path, "lora", pref_file, model__lora={"rank": 4, "alpha": 8}))
    base, tok = tiny_model_and_tokenizer()
    ids = tok("Tell me one fact about rain", return_tensors="pt").input_ids
    before = base(ids).logits
    peft_model = PeftModel.from_pretrained(base, summary["final_model"])
    after = peft_model(ids).logits
    assert not torch.allclose(before, after)
    weights = _final_weights(summary)
    assert weights and all("lora_" in k for k in weights)


def test_accumulation_1x8_equals_8x1(tmp_path, pref_file):
    one = train(_cfg(tmp_path, "a", pref_file, pairs_per_micro_batch=8))
    eight = train(_cfg(tmp_path, "b", pref_file, pairs_per_micro_batch=1))
    wa, wb = _final_weights(one), _final_weights(eight)
    # Different micro-batch shapes round differently (matmul blocking, fused q/k/v, reduction order); Adam's normalized
    # step turns that into differences of a few 1e-6 on near-zero-gradient elements, against steps of ~1e-2 (lr)
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=1e-5, rtol=1e-5)
    from alignkit.models.tiny import tiny_model

    start = tiny_model(wa["model.embed_tokens.weight"].shape[0]).state_dict()
    assert max((wa[n] - start[n]).abs().max().item() for n in wa) > 1e-3  # the runs moved far beyond the tolerance


def test_live_reference_matches_precomputed(tmp_path, pref_file):
    pre = train(_cfg(tmp_path, "pre", pref_file, model__lora={"rank": 4}, reference="precompute"))
    live = train(_cfg(tmp_path, "live", pref_file, model__lora={"rank": 4}, reference="live"))
    for name, tensor in _final_weights(pre).items():
        torch.testing.assert_close(tensor, _final_weights(live)[name], atol=2e-6, rtol=1e-5)


def test_step_one_reference_is_the_policys_first_forward_and_matches_a_full_reference_pass(tmp_path, pref_file):
    import math

    from alignkit.models.load import load_model
    from alignkit.train.dpo import _load_pairs, _reference_logps
    from alignkit.train.loop import TokenLogprobs, make_runtime

    cfg = _cfg(tmp_path, "run", pref_file, run__max_steps=2)
    summary = train(cfg)
    assert summary["timing"]["reference_skipped_first_step"]
    saved = torch.load(tmp_path / "run" / "reference_logps.pt", weights_only=True)["logps"]
    assert not torch.isnan(saved).any()  # step 1 filled in the pairs the up-front pass skipped

    loaded = load_model(cfg.model)  # the same initial weights: every pair through the reference pass
    pairs, _ = _load_pairs(cfg, loaded.tokenizer)
    full = _reference_logps(cfg, make_runtime(cfg.run, "cpu"), TokenLogprobs(loaded.model), pairs, None)
    torch.testing.assert_close(saved, full, atol=1e-5, rtol=1e-5)
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6) and first["margin"] == 0.0


@pytest.mark.parametrize("extra", [{"model__lora": {"rank": 4, "dropout": 0.1}}, {"reference": "live"}])
def test_step_one_reference_from_the_policy_only_where_it_is_the_reference(tmp_path, pref_file, extra):
    summary = train(_cfg(tmp_path, "run", pref_file, run__max_steps=1, **extra))  # dropout: train mode differs
    assert not summary["timing"]["reference_skipped_first_step"]


class _Crash(Exception):
    pass


def test_resume_after_interruption_is_exact(tmp_path, pref_file, monkeypatch):
    full = train(_cfg(tmp_path, "uninterrupted", pref_file, run__max_steps=4))

    real_save = Checkpointer.save

    def save_then_crash(self, step, *args, **kwargs):
        real_save(self, step, *args, **kwargs)
        raise _Crash(f"simulated crash after step {step}")

    cfg = _cfg(tmp_path, "interrupted", pref_file, run__max_steps=4, run__save_every_steps=2)
    monkeypatch.setattr(Checkpointer, "save", save_then_crash)
    with pytest.raises(_Crash):
        train(cfg)
    monkeypatch.setattr(Checkpointer, "save", real_save)
    resumed = train(cfg)  # run.resume=auto picks up step 2
    assert resumed["timing"]["steps_run"] == 2
    for name, tensor in _final_weights(full).items():
        torch.testing.assert_close(_final_weights(resumed)[name], tensor, atol=0, rtol=0)
    steps = [json.loads(line)["step"] for line in (tmp_path / "interrupted" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_bad_data_stops_before_any_output(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "chosen": "a", "rejected": "b"}\n{"prompt": "x", "chosen": \n', encoding="utf-8")
    from alignkit.errors import DataError

    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        train(_cfg(tmp_path, "never-written", bad))
    assert not (tmp_path / "never-written").exists()


@pytest.mark.parametrize("row_tokens,per_pair_attention", [(None, False), (1, False), (300, False), (None, True)])
def test_packed_pair_log_probs_equal_two_plain_forwards(row_tokens, per_pair_attention):
    """[prompt | chosen | rejected] rows (one row, a row per pair, padded rows of several pairs; one unpadded row
    with attention run pair by pair) give the same sequence log-probs as two plain forwards."""
    from alignkit.data.batch import pack_pairs
    from alignkit.data.load import load_preferences
    from alignkit.data.template import tokenize_pairs
    from alignkit.models.tiny import tiny_model_and_tokenizer
    from alignkit.train.dpo import _pair_logps
    from alignkit.train.loop import TokenLogprobs

    from alignkit.models.attention import use_fast_cpu_attention

    model, tok = tiny_model_and_tokenizer(seed=5)
    model.eval()
    if per_pair_attention:
        use_fast_cpu_attention(model)
    records = load_preferences(resolve_data("builtin:quickstart"), limit=3).records
    pairs, _ = tokenize_pairs(tok, records, max_tokens=1024, max_prompt_tokens=512)
    with torch.no_grad():
        batch = pack_pairs(pairs, [0, 1, 2], row_tokens)
        assert batch.input_ids.shape[0] == {None: 1, 1: 3}.get(row_tokens, batch.input_ids.shape[0])
        module = TokenLogprobs(model, chunk_tokens=7)
        assert module.per_segment_attention == per_pair_attention
        assert (batch.segments is not None) == (row_tokens is None)
        packed = _pair_logps(module, batch)
        for i, p in enumerate(pairs):
            for j, reply in enumerate((p.chosen_ids, p.rejected_ids)):
                ids = torch.tensor([p.prompt_ids + reply])
                logp = model(ids).logits[0, :-1].log_softmax(-1).gather(1, ids[0, 1:, None]).squeeze(1)
                expected = logp[len(p.prompt_ids) - 1 :].sum()
                torch.testing.assert_close(packed[i, j], expected, atol=1e-4, rtol=1e-5)


def test_bf16_autocast_on_cpu_trains_and_keeps_fp32_weights(tmp_path, pref_file):
    from alignkit.train.loop import cpu_supports_bf16

    if not cpu_supports_bf16():
        pytest.skip("this CPU has neither AMX nor AVX512-BF16")
    summary = train(_cfg(tmp_path, "bf16", pref_file, run__precision="bf16", run__max_steps=3))
    weights = _final_weights(summary)
    assert all(t.dtype == torch.float32 for t in weights.values())
    fp32 = _final_weights(train(_cfg(tmp_path, "fp32", pref_file, run__max_steps=3)))
    assert any(not torch.equal(weights[k], fp32[k]) for k in weights)  # bf16 really changed the arithmetic
    diffs = [(weights[k] - fp32[k]).abs().max().item() for k in weights]
    assert max(diffs) < 0.05  # lr 1e-2 for 3 steps moves weights by ~3e-2 at most: same direction, bf16 noise


def test_sft_coef_raises_the_chosen_likelihood(tmp_path, pref_file):
    plain = train(_cfg(tmp_path, "plain", pref_file, run__max_steps=3))
    rpo = train(_cfg(tmp_path, "rpo", pref_file, run__max_steps=3, sft_coef=1.0))
    def rows(s: dict) -> list[dict]:
        return [json.loads(x) for x in (Path(s["final_model"]).parent / "metrics.jsonl").read_text().splitlines()]

    last_plain, last_rpo = rows(plain)[-1], rows(rpo)[-1]
    assert last_rpo["loss"] > last_plain["loss"]  # the NLL term is in the reported loss
    assert last_rpo["reward_chosen"] > last_plain["reward_chosen"]
