"""Reward-model trainer on a tiny random Llama: it learns, reloads with plain transformers and scores
the same as in training, ensembles expose disagreement, accumulation and resume are exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.config import from_dict
from alignkit.train.loop import Checkpointer
from alignkit.train.rm import RMConfig, train
from tests.unit.conftest import tiny_base


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine the threads wait on each other."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg(tmp_path: Path, name: str, pref_file: Path, **extra: object) -> RMConfig:
    base = {"pairs_per_step": 8, "pairs_per_micro_batch": 4, "data__eval": str(pref_file)}
    base.update(extra)
    return from_dict(RMConfig, tiny_base(tmp_path / name, pref_file, **base))


def _weights(summary: dict) -> dict[str, torch.Tensor]:
    return load_file(str(Path(summary["final_model"]) / "model.safetensors"))


def test_reward_model_learns_and_reloads_with_plain_transformers(tmp_path, pref_file):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from alignkit.rewards.model import RewardModelScorer

    summary = train(_cfg(tmp_path, "rm", pref_file, run__max_steps=6, model__lora={"rank": 4, "alpha": 8},
                         optim__lr=3e-3))
    before, after = summary["before"], summary["after"]
    assert after["accuracy"] > before["accuracy"] and after["accuracy"] >= 0.9
    assert after["margin_mean"] > before["margin_mean"]
    assert {"margin_p10", "margin_p50", "margin_p90", "margin_std"} <= set(after)
    assert (tmp_path / "rm" / "margins.png").stat().st_size > 1000

    final = summary["final_model"]
    model = AutoModelForSequenceClassification.from_pretrained(final)  # LoRA merged: a plain model
    tok = AutoTokenizer.from_pretrained(final)
    assert model.config.num_labels == 1 and not (Path(final) / "adapter_config.json").exists()
    chat = [{"role": "user", "content": "Tell me one fact about rain, please (0)."},
            {"role": "assistant", "content": "Sure: rain is a fine topic, and here is a fact 0."}]
    ids = tok(tok.apply_chat_template(chat, tokenize=False), add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        plain = model(input_ids=ids).logits[0, 0].item()
    scorer = RewardModelScorer.load([final])
    ours = scorer([chat[:1]], [chat[1]["content"]], [{}]).scores[0]
    assert ours == pytest.approx(plain, abs=1e-4)
    refusal = scorer([chat[:1]], ["I can't help with that."], [{}]).scores[0]
    assert ours > refusal


def test_ensemble_heads_disagree_and_are_scored_as_mean(tmp_path, pref_file):
    from alignkit.rewards.model import RewardModelScorer

    summary = train(_cfg(tmp_path, "ens", pref_file, heads=3, run__max_steps=2))
    after = summary["after"]
    assert len(after["head_accuracy"]) == 3 and after["disagreement"] > 0
    scorer = RewardModelScorer.load([summary["final_model"]])
    prompts = [[{"role": "user", "content": "Say something."}]] * 2
    res = scorer(prompts, ["Rain is wet.", "I can't help with that."], [{}, {}])
    members = scorer.member_scores(prompts, ["Rain is wet.", "I can't help with that."])
    assert members.shape == (3, 2)
    torch.testing.assert_close(torch.tensor(res.scores), members.mean(0))
    assert res.disagreement is not None and all(d > 0 for d in res.disagreement)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_accumulation_1x8_equals_8x1(tmp_path, pref_file):
    one = train(_cfg(tmp_path, "a", pref_file, pairs_per_micro_batch=8, center_coef=0.01, heads=2))
    eight = train(_cfg(tmp_path, "b", pref_file, pairs_per_micro_batch=1, center_coef=0.01, heads=2))
    # the gradient norm before clipping is what a wrong normalization changes (Adam would hide a scale)
    for a, b in zip(_rows(tmp_path / "a"), _rows(tmp_path / "b")):
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    wa, wb = _weights(one), _weights(eight)
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=1e-4, rtol=1e-4)


class _Crash(Exception):
    pass


def test_resume_after_interruption_is_exact(tmp_path, pref_file, monkeypatch):
    full = train(_cfg(tmp_path, "uninterrupted", pref_file, run__max_steps=4, heads=2))
    real_save = Checkpointer.save

    def save_then_crash(self, step, *args, **kwargs):
        real_save(self, step, *args, **kwargs)
        raise _Crash(f"simulated crash after step {step}")

    cfg = _cfg(tmp_path, "interrupted", pref_file, run__max_steps=4, run__save_every_steps=2, heads=2)
    monkeypatch.setattr(Checkpointer, "save", save_then_crash)
    with pytest.raises(_Crash):
        train(cfg)
    monkeypatch.setattr(Checkpointer, "save", real_save)
    resumed = train(cfg)
    assert resumed["timing"]["steps_run"] == 2
    for name, tensor in _weights(full).items():
        torch.testing.assert_close(_weights(resumed)[name], tensor, atol=0, rtol=0)
    steps = [json.loads(line)["step"] for line in (tmp_path / "interrupted" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
