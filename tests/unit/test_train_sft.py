"""SFT trainer smoke tests: finite decreasing loss, accumulation equivalence, exact resume, reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.config import from_dict
from alignkit.train.loop import Checkpointer
from alignkit.train.sft import SFTConfig, micro_batches, train
from tests.unit.conftest import tiny_base


def _cfg(tmp_path: Path, name: str, chat_file: Path, **extra: object) -> SFTConfig:
    base = {"examples_per_step": 8, "tokens_per_micro_batch": 1024}
    base.update(extra)
    return from_dict(SFTConfig, tiny_base(tmp_path / name, chat_file, **base))


def _weights(summary: dict) -> dict[str, torch.Tensor]:
    final = Path(summary["final_model"])
    name = "adapter_model.safetensors" if (final / "adapter_config.json").exists() else "model.safetensors"
    return load_file(str(final / name))


def test_loss_is_finite_and_falls(tmp_path, chat_file):
    summary = train(_cfg(tmp_path, "sft", chat_file, run__max_steps=6, data__eval=str(chat_file)))
    rows = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert summary["after"]["nll"] < summary["before"]["nll"]


def _tokenized(chat_file, max_tokens=128):
    from alignkit.data.load import load_conversations
    from alignkit.data.template import tokenize_conversations
    from alignkit.models.tiny import tiny_tokenizer

    return tokenize_conversations(tiny_tokenizer(), load_conversations(chat_file).records, max_tokens=max_tokens)[0]


def test_accumulation_1x8_equals_8x1(tmp_path, chat_file):
    lengths = [len(e.input_ids) for e in _tokenized(chat_file)]
    budget = max(lengths)
    assert 2 * min(lengths) > budget  # so a budget of `budget` tokens holds exactly one conversation
    one = train(_cfg(tmp_path, "a", chat_file))  # all 8 conversations packed into one row
    eight = train(_cfg(tmp_path, "b", chat_file, tokens_per_micro_batch=budget, data__max_tokens=budget,
                       data__max_prompt_tokens=budget - 1))
    for name, tensor in _weights(one).items():
        torch.testing.assert_close(tensor, _weights(eight)[name], atol=2e-6, rtol=1e-5)


def test_packing_splits_by_token_budget(tmp_path, chat_file):
    examples = _tokenized(chat_file)
    longest = max(len(e.input_ids) for e in examples)
    assert len(micro_batches(examples, list(range(8)), longest)) == 8
    packed = micro_batches(examples, list(range(8)), 10_000)
    assert len(packed) == 1 and packed[0].num_examples == 8


def test_packed_log_probs_equal_separate_forwards():
    """Block-diagonal packing must not let one conversation see another."""
    from alignkit.data.batch import pack_conversations
    from alignkit.data.records import Conversation, Message
    from alignkit.data.template import tokenize_conversation
    from alignkit.models.tiny import tiny_model_and_tokenizer
    from alignkit.train.loop import TokenLogprobs

    model, tok = tiny_model_and_tokenizer()
    module = TokenLogprobs(model).eval()
    convs = [Conversation((Message("user", f"Say {w}."), Message("assistant", f"{w} {w}!"))) for w in ("rain", "tea")]
    examples = [tokenize_conversation(tok, c, max_tokens=128) for c in convs]

    def run(batch):
        return module(batch.input_ids, batch.position_ids, batch.attention_mask, batch.pred_index, batch.targets)

    with torch.no_grad():
        together = run(pack_conversations(examples))
        apart = torch.cat([run(pack_conversations([e])) for e in examples])
    torch.testing.assert_close(together, apart, atol=1e-5, rtol=1e-5)


def test_resume_after_interruption_is_exact(tmp_path, chat_file, monkeypatch):
    full = train(_cfg(tmp_path, "whole", chat_file, run__max_steps=4))
    real_save = Checkpointer.save

    def save_then_crash(self, step, *args, **kwargs):
        real_save(self, step, *args, **kwargs)
        raise KeyboardInterrupt

    cfg = _cfg(tmp_path, "cut", chat_file, run__max_steps=4, run__save_every_steps=2)
    monkeypatch.setattr(Checkpointer, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(Checkpointer, "save", real_save)
    resumed = train(cfg)
    for name, tensor in _weights(full).items():
        torch.testing.assert_close(_weights(resumed)[name], tensor, atol=0, rtol=0)
