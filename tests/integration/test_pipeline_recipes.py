"""`alignkit run`: the shipped GPU recipes end to end on the tiny model, the cache on a second run, and the
multi-process (accelerate launch, gloo) training path on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.pipeline.recipe import load_recipe
from alignkit.pipeline.runner import run_pipeline

REPO = Path(__file__).resolve().parents[2]

TINY_EVAL = ["stages.baseline.model=${model}", "stages.baseline.limit=3", "stages.baseline.max_new_tokens=8",
             "stages.baseline.suite=[harmbench, xstest, truthfulqa_mc, arc_easy]"]

TINY = {
    "cai-dpo": ["stages.cai.limit=4", "stages.cai.rounds=1", "stages.cai.response.max_new_tokens=8",
                "stages.cai.critique.max_new_tokens=8", "stages.cai.revision.max_new_tokens=8",
                # the tiny random model writes empty replies, so its CAI revisions yield no pairs: label shipped ones
                "stages.label.pairs=builtin:quickstart", "stages.label.limit=6",
                "stages.label.judge.model=tiny-random-llama",
                "stages.train.set.run.max_steps=1", "stages.train.set.pairs_per_step=2",
                "stages.train.set.pairs_per_micro_batch=2", "stages.train.set.sample_prompts=0",
                "stages.train.set.model.lora={rank: 4, alpha: 8}"],
    "rlhf-ppo": ["stages.rm.set.run.max_steps=1", "stages.rm.set.data.limit=16", "stages.rm.set.model.lora={rank: 4, alpha: 8}",
                 "stages.ppo.set.run.max_steps=1", "stages.ppo.set.data.limit=16", "stages.ppo.set.prompts_per_step=2",
                 "stages.ppo.set.prompts_per_micro_batch=2", "stages.ppo.set.rollout.max_new_tokens=8",
                 "stages.ppo.set.rollout.eval_prompts=2", "stages.ppo.set.rollout.sample_prompts=0",
                 "stages.ppo.set.model.lora={rank: 4, alpha: 8}"],
    "rlaif-grpo": ["stages.grpo.set.run.max_steps=1", "stages.grpo.set.data.limit=16", "stages.grpo.set.prompts_per_step=2",
                   "stages.grpo.set.samples_per_prompt=2", "stages.grpo.set.prompts_per_micro_batch=2",
                   "stages.grpo.set.rollout.max_new_tokens=8", "stages.grpo.set.rollout.eval_prompts=2",
                   "stages.grpo.set.rollout.sample_prompts=0", "stages.grpo.set.model.lora={rank: 4, alpha: 8}"],
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_gpu_recipe_runs_on_the_tiny_model_and_caches(name, tmp_path, benchmarks, monkeypatch, capsys):
    monkeypatch.setenv("ALIGNKIT_BENCHMARKS", str(benchmarks))
    overrides = ["model=tiny-random-llama", f"output_dir={tmp_path / name}", "gates=[]", *TINY_EVAL, *TINY[name]]
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml", overrides)
    first = run_pipeline(recipe, progress=False)
    assert first.ran == [s.name for s in recipe.stages] and first.report
    headline = json.loads(Path(first.outputs["report"]["headline"]).read_text())
    assert {r["id"] for r in headline["rows"]} >= {"xstest.over_refusal", "truthfulqa_mc.mc1", "arc_easy.acc"}
    html = Path(first.report).read_text()
    assert "<section id=pipeline>" in html and "Significant changes" in html
    second = run_pipeline(load_recipe(REPO / "recipes" / f"{name}.yaml", overrides), progress=False)
    assert second.ran == [] and second.cached == first.ran


def test_two_process_training_matches_one_process(tmp_path):
    """A train stage under `accelerate launch` with 2 CPU processes (gloo) gives the single-process weights."""
    import yaml

    def recipe(out: Path, launch: dict) -> Path:
        stage = {"name": "train", "kind": "train", "method": "dpo", "config": str(REPO / "recipes" / "dpo-tiny.yaml"),
                 "set": {"run.precision": "fp32", "sample_prompts": 0, "data.eval": None, "run.max_steps": 2}}
        if launch:
            stage["launch"] = launch
        path = tmp_path / f"{out.name}.yaml"
        path.write_text(yaml.safe_dump({"name": out.name, "output_dir": str(out), "stages": [stage]}))
        return path

    one = run_pipeline(load_recipe(recipe(tmp_path / "one", {})), progress=False)
    two = run_pipeline(load_recipe(recipe(tmp_path / "two", {"num_processes": 2, "cpu": True})), progress=False)
    summary = json.loads(Path(two.outputs["train"]["summary"]).read_text())
    assert summary["processes"] == 2
    wa = load_file(str(Path(one.outputs["train"]["model"]) / "adapter_model.safetensors"))
    wb = load_file(str(Path(two.outputs["train"]["model"]) / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)
