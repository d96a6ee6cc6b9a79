"""Red teaming the real SmolLM2-135M-Instruct on HarmBench behaviors with the offline judge: every family
runs, transcripts are stored, the export feeds `alignkit cai` and LoRA DPO, and the report renders.
Sizes are kept small for CI (2 behaviors, short replies, a 2-iteration PAIR)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignkit.config import from_dict
from alignkit.generate import LocalGenerator
from alignkit.safety.redteam.config import RedteamConfig
from alignkit.safety.redteam.runner import run_redteam
from alignkit.store import ResultStore

FAMILIES = ("direct", "jailbreak", "obfuscation", "many_shot", "injection", "crescendo", "pair")


@pytest.fixture(scope="module")
def red_run(tmp_path_factory, smollm2, benchmarks):
    root = tmp_path_factory.mktemp("redteam")
    target = LocalGenerator(smollm2.model, smollm2.tokenizer, name="smollm2-135m-instruct", batch_size=16)
    cfg = from_dict(RedteamConfig, {
        "target": "smollm2-135m-instruct", "families": ["all"], "limit": 2, "seed": 0, "data_dir": str(benchmarks),
        "db": str(root / "rt.db"), "output_dir": str(root / "out"), "max_new_tokens": 32, "progress": False,
        "xstest_safe": 2, "many_shot": {"shots": 4}, "crescendo": {"max_turns": 3},
        "pair": {"iterations": 2, "attacker_max_new_tokens": 64}})
    outcome = run_redteam(cfg, target=target)
    return root, cfg, outcome


def test_every_family_runs_and_is_judged(red_run) -> None:
    root, cfg, out = red_run
    overall = out.metrics["redteam"]
    assert overall["asr"].n == 2 * 17
    for family in FAMILIES:
        m = out.metrics[f"redteam/{family}"]["asr"]
        assert m.n >= 2 and 0.0 <= m.value <= 1.0 and m.lo - 1e-9 <= m.value <= m.hi + 1e-9
    assert overall["judge_accuracy"].n > 0 and 0.5 < overall["judge_accuracy"].value <= 1.0
    with ResultStore(cfg.db) as store:
        recs = [r for t in store.tasks(out.run_id) for r in store.records(out.run_id, t)]
    assert all(r.meta["transcript"][-1]["role"] == "assistant" for r in recs)
    assert any(r.output.strip() for r in recs)  # the real model answered
    pair = next(r for r in recs if r.meta["family"] == "pair")
    assert 1 <= pair.meta["iterations"] <= 2 and pair.meta["search"]


def test_export_trains_with_cai_and_dpo(red_run, tmp_path) -> None:
    from alignkit.feedback import cai as cai_mod
    from alignkit.feedback.settings import CAIConfig
    from alignkit.safety.redteam.export import export_attacks
    from alignkit.train.dpo import DPOConfig, train

    root, cfg, out = red_run
    with ResultStore(cfg.db) as store:
        # all attacks, so the test does not depend on how many the small model fell for
        s = export_attacks(store, out.run_id, tmp_path / "export", heldout_fraction=0.5, seed=0,
                           successful_only=False)
    assert s["train_prompts"] > 0 and s["heldout_behaviors"] == 1
    cai_cfg = from_dict(CAIConfig, {"prompts": str(tmp_path / "export" / "train.jsonl"), "limit": 2, "rounds": 1,
                                    "output_dir": str(tmp_path / "cai"), "progress": False,
                                    "response": {"max_new_tokens": 24}, "critique": {"max_new_tokens": 16},
                                    "revision": {"max_new_tokens": 24}})
    summary = cai_mod.run_sl(cai_cfg)
    assert summary["prompts"] == 2
    dpo = from_dict(DPOConfig, {
        "model": {"name": "smollm2-135m-instruct", "lora": {"rank": 4, "alpha": 8}},
        "data": {"train": str(tmp_path / "export" / "train_prefs.jsonl"), "max_tokens": 192,
                 "max_prompt_tokens": 96},
        "optim": {"lr": 1e-4, "warmup_ratio": 0.0},
        "run": {"output_dir": str(tmp_path / "dpo"), "max_steps": 1, "progress": False},
        "pairs_per_step": 2, "pairs_per_micro_batch": 1, "sample_prompts": 0})
    assert train(dpo)["steps"] == 1


def test_report_renders(red_run, tmp_path) -> None:
    from alignkit.safety.redteam.report import build_redteam_report

    root, cfg, out = red_run
    with ResultStore(cfg.db) as store:
        path = build_redteam_report(store, [out.run_id], tmp_path / "report.html")
    html = Path(path).read_text()
    assert "ASR by attack family" in html and "ASR by hazard category" in html and "judge" in html
    summary = json.loads(out.summary_path.read_text())
    assert summary["judge_audit"]["n"] > 0
