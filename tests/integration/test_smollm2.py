"""The real chat model: built-in name, cached de-quantized weights, templates, a short LoRA DPO run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from alignkit.config import from_dict
from alignkit.data.builtin import resolve_data
from alignkit.data.load import load_preferences, load_prompts
from alignkit.data.template import tokenize_pair
from alignkit.generate import generate_local
from alignkit.models import ModelConfig, load_model, resolve_source


def test_builtin_model_is_smollm2_and_reloads_fast_from_cache(smollm2):
    model, tok = smollm2.model, smollm2.tokenizer
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert model.config.tie_word_embeddings and len(tok) == 49152
    start = time.perf_counter()
    again = load_model(ModelConfig(name="smollm2-135m-instruct"), for_training=False)
    assert time.perf_counter() - start < 10  # cached safetensors, not a second de-quantization
    assert Path(again.source, "model.safetensors").is_file()


def test_cached_weights_equal_the_gguf_dequantization(smollm2):
    from transformers import AutoModelForCausalLM

    directory, gguf = resolve_source("smollm2-135m-instruct")
    direct = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(direct(ids).logits, smollm2.model(ids).logits)


def test_assistant_mask_on_the_real_template(smollm2):
    tok = smollm2.tokenizer
    pair = load_preferences(resolve_data("builtin:quickstart"), limit=1).records[0]
    t = tokenize_pair(tok, pair, max_tokens=512, max_prompt_tokens=256)
    assert tok.decode(t.prompt_ids).endswith("<|im_start|>assistant\n")
    assert tok.decode(t.chosen_ids) == pair.chosen[-1].content + "<|im_end|>\n"
    assert tok.decode(t.prompt_ids).count("<|im_start|>system") == 1


def test_greedy_generation_answers(smollm2):
    replies = generate_local(smollm2.model, smollm2.tokenizer,
                             [[{"role": "user", "content": "What is the capital of France?"}]], max_new_tokens=20)
    assert "Paris" in replies[0]


def test_harmbench_and_advbench_prompts_load(benchmarks):
    harm = load_prompts(benchmarks / "harmbench/data/behavior_datasets/harmbench_behaviors_text_all.csv")
    adv = load_prompts(benchmarks / "advbench/harmful_behaviors.csv")
    assert len(harm.records) == 400 and len(adv.records) == 520


def test_lora_dpo_on_the_real_model(tmp_path):
    from peft import AutoPeftModelForCausalLM

    from alignkit.train.dpo import DPOConfig, train

    cfg = from_dict(DPOConfig, {
        "model": {"name": "smollm2-135m-instruct", "lora": {"rank": 8, "alpha": 16}},
        "data": {"train": "builtin:quickstart", "eval": "builtin:quickstart-heldout", "limit": 8},
        "optim": {"lr": 2e-4, "warmup_ratio": 0.0},
        "run": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "progress": False},
        "pairs_per_step": 4, "pairs_per_micro_batch": 4, "sample_prompts": 1, "sample_max_new_tokens": 8,
    })
    cfg.data.eval = None  # held-out eval is covered by the quickstart; keep this test short
    summary = train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    reloaded = AutoPeftModelForCausalLM.from_pretrained(summary["final_model"])
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in reloaded.named_parameters())
