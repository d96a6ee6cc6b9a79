"""PPO on a tiny random Llama: value head and value model, KL control, truncation penalty, accumulation
equivalence and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.config import from_dict
from alignkit.errors import ConfigError
from alignkit.train.loop import Checkpointer
from alignkit.train.ppo import PPOConfig, train


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine the threads wait on each other."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    rows = [{"prompt": [{"role": "user", "content": f"Tell me one fact about topic {i}."}]} for i in range(16)]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _cfg(tmp_path: Path, name: str, prompt_file: Path, **extra: object) -> PPOConfig:
    base: dict = {
        "model": {"name": "tiny-random-llama", "lora": {"rank": 4, "alpha": 8}},
        "data": {"train": str(prompt_file), "eval": str(prompt_file), "max_tokens": 128, "max_prompt_tokens": 64},
        "optim": {"lr": 1e-2, "warmup_ratio": 0.0},
        "run": {"output_dir": str(tmp_path / name), "max_steps": 2, "progress": False, "precision": "fp32"},
        "rollout": {"max_new_tokens": 8, "eval_prompts": 2, "sample_prompts": 1, "temperature": 1.5},
        "rewards": [{"kind": "rule", "name": "length", "options": {"max_chars": 6}}],
        "monitor": {"plot": False},
        "prompts_per_step": 4, "samples_per_prompt": 1, "prompts_per_micro_batch": 2, "ppo_epochs": 2,
        "minibatches_per_epoch": 2,
    }
    for key, value in extra.items():
        section, _, field_name = key.partition("__")
        if field_name:
            base.setdefault(section, {})[field_name] = value
        else:
            base[key] = value
    return from_dict(PPOConfig, base)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line
            or '"policy_loss"' in line]


def _adapter(summary: dict) -> dict[str, torch.Tensor]:
    return load_file(str(Path(summary["final_model"]) / "adapter_model.safetensors"))


def test_ppo_with_value_head_trains(tmp_path, prompt_file):
    summary = train(_cfg(tmp_path, "head", prompt_file, adaptive_kl=True, kl_target=0.01, kl_horizon=10.0,
                         missing_eos_penalty=1.0))
    rows = _rows(tmp_path / "head")
    assert len(rows) == 2
    for r in rows:
        assert all(torch.isfinite(torch.tensor(r[k])) for k in ("policy_loss", "value_loss", "kl", "grad_norm"))
    assert rows[0]["values"] == 0.0 and rows[1]["values"] != 0.0  # zero-initialized head, then it learns
    assert rows[1]["kl_coef"] != rows[0]["kl_coef"]  # the adaptive controller moved beta
    # the truncation penalty is in the score, not in the logged (proxy) reward
    assert rows[0]["score"] == pytest.approx(rows[0]["reward"] - rows[0]["truncated"], abs=1e-5)
    assert any(t.abs().sum() > 0 for n, t in _adapter(summary).items() if "lora_B" in n)
    assert {"monitor/kl", "monitor/length"} <= set(rows[0])


def test_ppo_with_a_separate_value_model_trains(tmp_path, prompt_file):
    train(_cfg(tmp_path, "model", prompt_file, value="model", run__max_steps=1, kl_estimator="k3",
               whiten_rewards=True))
    row = _rows(tmp_path / "model")[0]
    assert torch.isfinite(torch.tensor([row["policy_loss"], row["value_loss"]])).all() and row["values"] != 0.0


def test_accumulation_1x2_equals_2x1(tmp_path, prompt_file):
    train(_cfg(tmp_path, "a", prompt_file, prompts_per_micro_batch=2))
    train(_cfg(tmp_path, "b", prompt_file, prompts_per_micro_batch=1))
    for a, b in zip(_rows(tmp_path / "a"), _rows(tmp_path / "b")):
        assert a["reward"] == b["reward"]
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
        assert a["value_loss"] == pytest.approx(b["value_loss"], rel=1e-5)


class _Crash(Exception):
    pass


def test_resume_after_interruption_is_exact(tmp_path, prompt_file, monkeypatch):
    full = train(_cfg(tmp_path, "full", prompt_file, run__max_steps=4, adaptive_kl=True, kl_target=0.01,
                      kl_horizon=10.0))
    real_save = Checkpointer.save

    def save_then_crash(self, step, *args, **kwargs):
        real_save(self, step, *args, **kwargs)
        raise _Crash(f"simulated crash after step {step}")

    cfg = _cfg(tmp_path, "interrupted", prompt_file, run__max_steps=4, run__save_every_steps=2, adaptive_kl=True,
               kl_target=0.01, kl_horizon=10.0)
    monkeypatch.setattr(Checkpointer, "save", save_then_crash)
    with pytest.raises(_Crash):
        train(cfg)
    monkeypatch.setattr(Checkpointer, "save", real_save)
    resumed = train(cfg)
    assert resumed["timing"]["steps_run"] == 2
    for name, tensor in _adapter(full).items():
        torch.testing.assert_close(_adapter(resumed)[name], tensor, atol=0, rtol=0)
    full_rows, resumed_rows = _rows(tmp_path / "full"), _rows(tmp_path / "interrupted")
    assert [r["step"] for r in resumed_rows] == [1, 2, 3, 4]
    assert resumed_rows[-1]["kl_coef"] == full_rows[-1]["kl_coef"]  # the controller state came back too


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="rewards is empty"):
        from_dict(PPOConfig, {"data": {"train": "x.jsonl"}})
    with pytest.raises(ConfigError, match="minibatches_per_epoch"):
        from_dict(PPOConfig, {"data": {"train": "x.jsonl"}, "rewards": [{"name": "length"}], "prompts_per_step": 6,
                              "prompts_per_micro_batch": 1, "minibatches_per_epoch": 4})
