"""Supervised fine-tuning on ideal responses: token-level NLL on assistant tokens only.

Read top to bottom: config -> model -> data -> the loop -> final save.

    alignkit train sft --config recipes/sft-tiny.yaml data.train=chats.jsonl

Batches are padding-free: a step's conversations are packed into rows of at most
`tokens_per_micro_batch` tokens, each attending only to itself. The loss of a step is the sum of
assistant-token NLLs divided by the step's total assistant tokens (across micro-batches and
processes), so accumulation never changes the update.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.models.load import ModelConfig
from alignkit.train.settings import DataSettings, OptimSettings, RunSettings

__all__ = ["SFTConfig", "train", "micro_batches"]

log = logging.getLogger(__name__)


@dataclass
class SFTConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataSettings = field(default_factory=DataSettings)
    optim: OptimSettings = field(default_factory=lambda: OptimSettings(lr=2e-5))
    run: RunSettings = field(default_factory=RunSettings)
    examples_per_step: int = field(default=16, metadata={"help": "conversations per optimizer step (all processes)"})
    tokens_per_micro_batch: int = field(default=2048, metadata={"help": "packing budget of one forward pass"})
    logprob_chunk_tokens: int = field(default=1024, metadata={"help": "rows per LM-head chunk when gathering log-probs"})

    def validate(self) -> None:
        if self.examples_per_step < 1:
            raise ValueError("examples_per_step must be >= 1")
        if self.tokens_per_micro_batch < self.data.max_tokens:
            raise ValueError(f"tokens_per_micro_batch ({self.tokens_per_micro_batch}) must hold one example of "
                             f"data.max_tokens ({self.data.max_tokens})")


def _load_conversations(cfg: SFTConfig, tokenizer: Any) -> tuple[list[Any], list[Any]]:
    from alignkit.data.builtin import resolve_data
    from alignkit.data.load import load_conversations
    from alignkit.data.template import tokenize_conversations

    out = []
    for spec, limit in ((cfg.data.train, cfg.data.limit), (cfg.data.eval, None)):
        if not spec:
            out.append([])
            continue
        loaded = load_conversations(resolve_data(spec), split=cfg.data.split, skip_invalid=cfg.data.skip_invalid,
                                    limit=limit)
        log.info(loaded.summary())
        examples, stats = tokenize_conversations(tokenizer, loaded.records, max_tokens=cfg.data.max_tokens,
                                                 truncation=cfg.data.truncation)
        log.info("%s: %s", spec, stats.summary())
        out.append(examples)
    return out[0], out[1]


def micro_batches(examples: list[Any], indices: list[int], budget: int) -> list[Any]:
    """Pack examples (in order) into rows of at most `budget` tokens."""
    from alignkit.data.batch import pack_conversations

    rows, current, used = [], [], 0
    for i in indices:
        n = len(examples[i].input_ids)
        if current and used + n > budget:
            rows.append(pack_conversations(current))
            current, used = [], 0
        current.append(examples[i])
        used += n
    if current:
        rows.append(pack_conversations(current))
    return rows


def _target_tokens(examples: list[Any], indices: list[int]) -> int:
    # tokens with a loss: mask positions after the first token of each example
    return sum(sum(examples[i].loss_mask[1:]) for i in indices)


def evaluate(cfg: SFTConfig, rt: Any, module: Any, examples: list[Any]) -> dict[str, float]:
    """Held-out mean NLL per assistant token and perplexity."""
    import torch

    if not examples:
        return {}
    was_training = module.training
    module.eval()
    nll, count = 0.0, 0
    with torch.no_grad(), rt.autocast():  # not inference_mode: autocast caches weight casts only outside it
        for batch in micro_batches(examples, list(range(len(examples))), cfg.tokens_per_micro_batch):
            batch = batch.to(rt.device)
            logps = module(batch.input_ids, batch.position_ids, batch.attention_mask, batch.pred_index, batch.targets,
                           batch.segments)
            nll -= logps.float().sum().item()
            count += int(batch.targets.numel())
    module.train(was_training)
    mean = nll / max(count, 1)
    return {"nll": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": count}


def train(cfg: SFTConfig) -> dict[str, Any]:
    """Run SFT as configured; returns the summary also written to `output_dir/summary.json`."""
    import torch
    from tqdm.auto import tqdm

    from alignkit.config import save_config, to_dict
    from alignkit.errors import AlignkitError
    from alignkit.models.load import load_model
    from alignkit.train.loop import (Checkpointer, MetricsSink, Throughput, TokenLogprobs, atomic_write_text,
                                     make_optimizer, make_runtime, make_scheduler, optimizer_step, planned_steps,
                                     seed_everything, step_batches)
    from alignkit.train.save import save_final

    rt = make_runtime(cfg.run, cfg.model.device)
    seed_everything(cfg.run.seed)
    out = Path(cfg.run.output_dir)
    ckpt = Checkpointer(out, cfg.run.keep_checkpoints)
    resume_from = ckpt.latest() if cfg.run.resume != "never" else None
    if cfg.run.resume == "must" and resume_from is None:
        raise AlignkitError(f"run.resume=must but {out / 'checkpoints'} holds no checkpoint")
    if cfg.run.resume == "never" and (out / "checkpoints").is_dir():
        raise AlignkitError(f"{out} already holds a run; choose another run.output_dir or set run.resume=auto")

    loaded = load_model(cfg.model)
    policy, tokenizer = loaded.model, loaded.tokenizer
    train_set, eval_set = _load_conversations(cfg, tokenizer)  # bad data stops here, before any output
    total_steps = planned_steps(len(train_set), cfg.examples_per_step, cfg.run)
    if rt.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")

    module = TokenLogprobs(policy, cfg.logprob_chunk_tokens).to(rt.device)
    optimizer = make_optimizer(module, cfg.optim)
    scheduler = make_scheduler(optimizer, total_steps, cfg.optim)
    module, optimizer = rt.accelerator.prepare(module, optimizer)
    raw = rt.accelerator.unwrap_model(module)
    start_step, summary = 0, {"before": {}}
    if resume_from is not None:
        state = ckpt.load(resume_from, raw.model, optimizer, scheduler)
        start_step, summary = state["step"], state["summary"]
        log.info("resumed from %s (step %d of %d)", resume_from, start_step, total_steps)
    elif rt.is_main:
        summary["before"] = evaluate(cfg, rt, raw, eval_set)

    sink = MetricsSink(out, cfg.run, to_dict(cfg), enabled=rt.is_main, start_step=start_step)
    meter, sums = Throughput(), torch.zeros(2, device=rt.device)  # nll sum, target tokens
    bar = tqdm(total=total_steps, initial=start_step, desc="sft", disable=not (cfg.run.progress and rt.is_main))
    batches = step_batches(len(train_set), cfg.examples_per_step, cfg.run.seed, start_step)
    module.train()
    for step in range(start_step, total_steps):
        indices = next(batches)
        denominator = max(_target_tokens(train_set, indices), 1)  # the whole step's, on every process
        micro = micro_batches(train_set, indices[rt.rank :: rt.world_size], cfg.tokens_per_micro_batch)
        for k, batch in enumerate(micro):
            batch = batch.to(rt.device)
            sync = rt.accelerator.no_sync(module) if k < len(micro) - 1 else torch.enable_grad()
            with sync, rt.autocast():
                logps = module(batch.input_ids, batch.position_ids, batch.attention_mask, batch.pred_index,
                               batch.targets, batch.segments)
                nll = -logps.float().sum()
                rt.accelerator.backward(nll * rt.world_size / denominator)
            sums += torch.stack([nll.detach(), torch.tensor(float(batch.targets.numel()), device=rt.device)])
            meter.add(batch.num_tokens * rt.world_size)
        grad_norm = optimizer_step(rt, module, optimizer, scheduler, cfg.optim.max_grad_norm)
        done = step + 1
        if done % cfg.run.log_every_steps == 0 or done == total_steps:
            total = rt.accelerator.reduce(sums.clone(), reduction="sum").tolist()
            sums.zero_()
            metrics = {"loss": total[0] / max(total[1], 1.0), "grad_norm": float(grad_norm) if grad_norm is not None
                       else float("nan"), "lr": scheduler.get_last_lr()[0], "tokens_per_s": meter.read()}
            sink.log(done, metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{metrics['tokens_per_s']:.0f}")
        if cfg.run.eval_every_steps and done % cfg.run.eval_every_steps == 0 and rt.is_main and eval_set:
            sink.log(done, {f"eval/{k}": v for k, v in evaluate(cfg, rt, raw, eval_set).items()})
        if cfg.run.save_every_steps and done % cfg.run.save_every_steps == 0 and done < total_steps and rt.is_main:
            ckpt.save(done, raw.model, optimizer, scheduler, {"summary": summary})
        bar.update(1)
    bar.close()
    sink.close()
    rt.accelerator.wait_for_everyone()
    if rt.is_main:
        summary["after"] = evaluate(cfg, rt, raw, eval_set)
        summary["steps"] = total_steps
        summary["final_model"] = str(save_final(raw.model, tokenizer, out / "final"))
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary
