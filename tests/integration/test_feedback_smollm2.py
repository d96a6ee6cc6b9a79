"""AI feedback on the real SmolLM2-135M-Instruct: CAI critique/revision on AdvBench prompts, soft labels in
both orders, a judge audit, and a 2-step LoRA DPO run on the CAI preferences (sizes kept small for CI)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from alignkit.config import from_dict
from alignkit.data.load import load_preferences
from alignkit.feedback import cai as cai_mod
from alignkit.feedback import label as label_mod
from alignkit.feedback.audit import format_report, run_audit
from alignkit.feedback.cai import run_sl
from alignkit.feedback.label import run_label
from alignkit.feedback.settings import AuditConfig, CAIConfig, LabelConfig
from alignkit.generate import LocalGenerator


@pytest.fixture(scope="module")
def smol_gen(smollm2) -> LocalGenerator:
    return LocalGenerator(smollm2.model, smollm2.tokenizer, name="smollm2-135m-instruct", batch_size=8)


@pytest.fixture(scope="module")
def cai_run(tmp_path_factory, smol_gen, benchmarks) -> Path:
    out = tmp_path_factory.mktemp("cai")
    patch = pytest.MonkeyPatch()
    patch.setattr(cai_mod, "_build", lambda *a, **k: smol_gen)
    try:
        cfg = from_dict(CAIConfig, {"prompts": "advbench", "data_dir": str(benchmarks), "limit": 4, "rounds": 1,
                                    "output_dir": str(out), "progress": False, "response": {"max_new_tokens": 48},
                                    "critique": {"max_new_tokens": 32}, "revision": {"max_new_tokens": 48}})
        run_sl(cfg)
    finally:
        patch.undo()
    return out


def test_cai_sl_produces_critiques_and_revisions(cai_run) -> None:
    records = [json.loads(line) for line in (cai_run / "records.jsonl").read_text().splitlines()]
    assert len(records) == 4
    for rec in records:
        assert rec["initial"].strip() and rec["rounds"][0]["critique"].strip()
        assert rec["rounds"][0]["principle"] and rec["final"] == (rec["rounds"][0]["revision"] or rec["initial"])
    pairs = load_preferences(cai_run / "prefs.jsonl").records
    assert 1 <= len(pairs) <= 4 and all(p.chosen[0].content != p.rejected[0].content for p in pairs)


def test_label_soft_labels_both_orders(cai_run, smol_gen, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(label_mod, "make_generator", lambda *a, **k: smol_gen)
    cfg = from_dict(LabelConfig, {"pairs": str(cai_run / "prefs.jsonl"), "output": str(tmp_path / "l.jsonl"),
                                  "progress": False, "judge": {"principles_per_comparison": 2}})
    summary = run_label(cfg)
    rows = [json.loads(line) for line in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert summary["judged"] >= 1 and summary["records"] == len(rows)
    for row in rows:
        assert 0.5 < row["p_chosen"] < 1 and len(row["principles"]) == 2
        both = row["p_chosen_shown_first"] + row["p_chosen_shown_second"]  # judged in both orders
        assert all(0 < p < 1 for p in both)
        assert row["p_chosen"] == pytest.approx(sum(both) / len(both), abs=1e-5)


def test_judge_audit_reports_position_and_length_bias(smol_gen, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(label_mod, "make_generator", lambda *a, **k: smol_gen)
    report = run_audit(from_dict(AuditConfig, {"limit": 12, "self_preference": False, "progress": False,
                                               "output": str(tmp_path / "audit.json")}))
    for key in ("flip_rate", "first_position_rate"):
        assert report["position"][key]["n"] > 0 and not math.isnan(report["position"][key]["value"])
    assert report["length"]["judge_prefers_longer"]["n"] == 12
    text = format_report(report)
    print("\n" + text)
    assert "position: flip rate on swap" in text


def test_cai_preferences_train_smollm2_lora_dpo(cai_run, tmp_path) -> None:
    from alignkit.train.dpo import DPOConfig, train

    cfg = from_dict(DPOConfig, {
        "model": {"name": "smollm2-135m-instruct", "lora": {"rank": 4, "alpha": 8}},
        "data": {"train": str(cai_run / "prefs.jsonl"), "max_tokens": 192, "max_prompt_tokens": 64},
        "optim": {"lr": 1e-4, "warmup_ratio": 0.0},
        "run": {"output_dir": str(tmp_path / "dpo"), "max_steps": 2, "progress": False},
        "pairs_per_step": 2, "pairs_per_micro_batch": 1, "sample_prompts": 0,
    })
    summary = train(cfg)
    assert summary["steps"] == 2
