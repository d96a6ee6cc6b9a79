"""GRPO/RLOO on a tiny random Llama, plus the rollout pieces it stands on: the shared-prefill sampler
and packed prompt groups. Finite loss, parameters change, accumulation 1x2 == 2x1, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.config import from_dict
from alignkit.data.rollout_batch import RolloutGroup, pack_groups, to_grid
from alignkit.generate import Generator, SamplingParams
from alignkit.models.tiny import tiny_model_and_tokenizer
from alignkit.train.grpo import GRPOConfig, train
from alignkit.train.loop import Checkpointer, TokenLogprobs
from alignkit.train.rl_common import load_rl_prompts
from alignkit.train.rollout import GroupSampler, collect_rollouts


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine the threads wait on each other."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

CHATS = [[{"role": "user", "content": "Tell me about rain."}],
         [{"role": "user", "content": "Sort a list in Python, please, with an example of sorted()."}],
         [{"role": "user", "content": "Hi"}]]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_tokenizer(seed=3)


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(16)]
    path = tmp_path / "math.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------- rollouts


def test_group_sampler_greedy_matches_transformers_generate(tiny):
    model, tok = tiny
    sampler = GroupSampler(model, tok, batch_size=2)
    assert isinstance(sampler, Generator)
    out = sampler.generate(CHATS, SamplingParams(max_tokens=10))
    for chat, group in zip(CHATS, out):
        ids = tok(tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True), add_special_tokens=False,
                  return_tensors="pt").input_ids
        ref = model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:]
        assert group[0].meta["token_ids"] == ref.tolist()
        assert group[0].meta["prompt_ids"] == ids[0].tolist()


def test_lora_is_merged_for_sampling_and_restored_exactly(tiny):
    from peft import LoraConfig, get_peft_model

    from alignkit.models.tiny import tiny_model

    base_model, tok = tiny_model(len(tiny[1]), seed=5), tiny[1]
    model = get_peft_model(base_model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained-looking adapter that changes the outputs
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = GroupSampler(model, tok).generate(CHATS[:2], SamplingParams(max_tokens=10))
    for chat, group in zip(CHATS[:2], out):
        ids = tok(tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True), add_special_tokens=False,
                  return_tensors="pt").input_ids
        ref = model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:]
        assert group[0].meta["token_ids"] == ref.tolist()  # the adapters were in effect while sampling
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n  # and the base weights came back bit for bit


def test_bf16_sampling_matches_a_bf16_model_and_restores_the_fp32_weights(tiny):
    import copy

    from peft import LoraConfig, get_peft_model

    from alignkit.models.tiny import tiny_model

    model = get_peft_model(tiny_model(len(tiny[1]), seed=5), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    tok = tiny[1]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    storage = {n: p.data_ptr() for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = GroupSampler(model, tok, dtype=torch.bfloat16).generate(CHATS[:2], SamplingParams(max_tokens=10))
    reference = copy.deepcopy(model).merge_and_unload().to(torch.bfloat16)  # what bf16 sampling should equal
    for chat, group in zip(CHATS[:2], out):
        ids = tok(tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True), add_special_tokens=False,
                  return_tensors="pt").input_ids
        ref = reference.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
        assert group[0].meta["token_ids"] == ref[0, ids.shape[1]:].tolist()
    for n, p in model.named_parameters():
        assert p.dtype == torch.float32 and p.data_ptr() == storage[n] and torch.equal(p, before[n]), n


def test_sampling_dtype_follows_the_training_autocast():
    from contextlib import nullcontext

    from alignkit.train.rollout import sampling_dtype

    assert sampling_dtype("auto", lambda: torch.autocast("cpu", dtype=torch.bfloat16)) is torch.bfloat16
    assert sampling_dtype("auto", nullcontext) is None
    assert sampling_dtype("float32", lambda: torch.autocast("cpu", dtype=torch.bfloat16)) is torch.float32


def test_group_sampler_samples_are_seeded_and_stop_at_eos(tiny):
    model, tok = tiny
    sampler = GroupSampler(model, tok, batch_size=4)
    params = SamplingParams(max_tokens=24, temperature=1.5, n=4, seed=7)
    a, b = sampler.generate(CHATS, params), sampler.generate(CHATS, params)
    assert [[c.meta["token_ids"] for c in g] for g in a] == [[c.meta["token_ids"] for c in g] for g in b]
    flat = [c for g in a for c in g]
    assert len({tuple(c.meta["token_ids"]) for c in flat}) > 1
    for c in flat:
        ids = c.meta["token_ids"]
        if c.finish_reason == "stop":
            assert ids[-1] == tok.eos_token_id and tok.eos_token_id not in ids[:-1]
        else:
            assert len(ids) == 24 and tok.eos_token_id not in ids
    assert any(c.finish_reason == "stop" for c in flat) or all(len(c.meta["token_ids"]) == 24 for c in flat)


def test_packed_group_logprobs_equal_separate_forwards(tiny):
    model, tok = tiny
    prompt = tok("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False).input_ids
    completions = [tok("Rain is wet.<|im_end|>", add_special_tokens=False).input_ids,
                   tok("Sure", add_special_tokens=False).input_ids]
    other = [tok("<|im_start|>user\nSort<|im_end|>\n", add_special_tokens=False).input_ids,
             [tok("Use sorted().", add_special_tokens=False).input_ids]]
    batch = pack_groups([RolloutGroup(prompt, completions, [0, 1]), RolloutGroup(other[0], other[1], [2])])
    assert batch.packed_tokens == len(prompt) + sum(map(len, completions)) + len(other[0]) + len(other[1][0])
    with torch.no_grad():
        packed = to_grid(TokenLogprobs(model)(batch.input_ids, batch.position_ids, batch.attention_mask,
                                              batch.pred_index, batch.targets), batch)
        for row, (p, c) in enumerate([(prompt, completions[0]), (prompt, completions[1]), (other[0], other[1][0])]):
            logits = model(torch.tensor([p + c])).logits[0, len(p) - 1 : -1].log_softmax(-1)
            alone = logits.gather(1, torch.tensor(c)[:, None]).squeeze(1)
            torch.testing.assert_close(packed[row, : len(c)], alone, atol=1e-5, rtol=1e-5)
            assert packed[row, len(c):].abs().sum() == 0


def test_text_only_generators_are_retokenized(tiny):
    from alignkit.generate import LocalGenerator

    model, tok = tiny
    ids = [tok(tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True), add_special_tokens=False).input_ids
           for c in CHATS[:2]]
    out = collect_rollouts(LocalGenerator(model, tok), tok, CHATS[:2], ids,
                           SamplingParams(max_tokens=6, temperature=1.0, n=2, seed=1))
    assert [r.prompt_index for r in out] == [0, 0, 1, 1]
    assert all(r.ids and r.prompt_ids == ids[r.prompt_index] for r in out)


def test_gsm8k_rows_become_prompts_with_gold_answers(prompt_file):
    prompts = load_rl_prompts(str(prompt_file), question_template="Q: {question}\nEnd with 'The answer is N.'")
    assert len(prompts) == 16 and prompts[3].messages[0].content.startswith("Q: What is 3 plus 3?")
    assert prompts[3].meta["answer"].endswith("#### 6") and prompts[3].source.endswith("math.jsonl:4")


# ---------------------------------------------------------------------------------------------- trainer


def _cfg(tmp_path: Path, name: str, prompt_file: Path, **extra: object) -> GRPOConfig:
    base: dict = {
        "model": {"name": "tiny-random-llama", "lora": {"rank": 4, "alpha": 8}},
        "data": {"train": str(prompt_file), "eval": str(prompt_file), "max_tokens": 128, "max_prompt_tokens": 64},
        "optim": {"lr": 2e-2, "warmup_ratio": 0.0},
        "run": {"output_dir": str(tmp_path / name), "max_steps": 2, "progress": False, "precision": "fp32"},
        "rollout": {"max_new_tokens": 8, "eval_prompts": 2, "sample_prompts": 1, "temperature": 1.5},
        "rewards": [{"kind": "rule", "name": "length", "options": {"max_chars": 6}},
                    {"kind": "rule", "name": "gsm8k_answer", "weight": 0.5}],
        "monitor": {"plot": False},
        "prompts_per_step": 2, "samples_per_prompt": 4, "prompts_per_micro_batch": 1,
    }
    for key, value in extra.items():
        section, _, field_name = key.partition("__")
        if field_name:
            base.setdefault(section, {})[field_name] = value
        else:
            base[key] = value
    return from_dict(GRPOConfig, base)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _adapter(summary: dict) -> dict[str, torch.Tensor]:
    return load_file(str(Path(summary["final_model"]) / "adapter_model.safetensors"))


def test_grpo_trains_with_finite_loss_and_changes_the_adapter(tmp_path, prompt_file):
    summary = train(_cfg(tmp_path, "run", prompt_file, kl_coef=0.05, monitor__plot=True, run__eval_every_steps=2))
    rows = [r for r in _rows(tmp_path / "run") if "loss" in r]
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor([r["loss"], r["kl"], r["grad_norm"]])).all() for r in rows)
    assert {"monitor/kl", "monitor/reward", "monitor/length", "reward/length", "reward/gsm8k_answer"} <= set(rows[0])
    assert any(t.abs().sum() > 0 for n, t in _adapter(summary).items() if "lora_B" in n)
    assert "reward_mean" in summary["before"] and "reward_mean" in summary["after"]
    assert (tmp_path / "run" / "monitors.png").stat().st_size > 5000
    assert any("eval/reward_mean" in r for r in _rows(tmp_path / "run"))


@pytest.mark.parametrize("options", [{"baseline": "rloo", "scale_rewards": "none", "loss_aggregation": "sequence"},
                                     {"ratio_level": "sequence", "iterations_per_batch": 2, "clip_high": 0.28,
                                      "mask_truncated": True, "monitor_kl": False}])
def test_variants_train(tmp_path, prompt_file, options):
    train(_cfg(tmp_path, "v", prompt_file, run__max_steps=1, **options))
    row = _rows(tmp_path / "v")[0]
    assert torch.isfinite(torch.tensor(row["loss"])) and row["grad_norm"] >= 0


def test_accumulation_1x2_equals_2x1(tmp_path, prompt_file):
    train(_cfg(tmp_path, "a", prompt_file, prompts_per_micro_batch=2))
    train(_cfg(tmp_path, "b", prompt_file, prompts_per_micro_batch=1))
    for a, b in zip(_rows(tmp_path / "a"), _rows(tmp_path / "b")):
        assert a["reward"] == b["reward"]  # same rollouts
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)


class _Crash(Exception):
    pass


def test_resume_after_interruption_is_exact(tmp_path, prompt_file, monkeypatch):
    full = train(_cfg(tmp_path, "full", prompt_file, run__max_steps=4))
    real_save = Checkpointer.save

    def save_then_crash(self, step, *args, **kwargs):
        real_save(self, step, *args, **kwargs)
        raise _Crash(f"simulated crash after step {step}")

    cfg = _cfg(tmp_path, "interrupted", prompt_file, run__max_steps=4, run__save_every_steps=2)
    monkeypatch.setattr(Checkpointer, "save", save_then_crash)
    with pytest.raises(_Crash):
        train(cfg)
    monkeypatch.setattr(Checkpointer, "save", real_save)
    resumed = train(cfg)
    assert resumed["timing"]["steps_run"] == 2
    for name, tensor in _adapter(full).items():
        torch.testing.assert_close(_adapter(resumed)[name], tensor, atol=0, rtol=0)
    assert [r["step"] for r in _rows(tmp_path / "interrupted")] == [1, 2, 3, 4]
