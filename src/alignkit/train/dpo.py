"""Direct preference optimization and its family (DPO, cDPO, robust DPO, IPO, hinge, SimPO, ORPO).

Read top to bottom: config -> model -> data -> reference log-probs -> the loop -> final save.

    alignkit train dpo --config recipes/quickstart-dpo.yaml beta=0.2

What makes it fast (see DESIGN.md, "Performance principles"):
- each pair is one packed segment [prompt | chosen | rejected]: the prompt is computed once; on CPU a micro-batch is
  one unpadded row and attention runs pair by pair (alignkit.models.attention), elsewhere pairs fill short padded rows;
- the LM head runs only on reply tokens, in chunks, never as full-vocabulary logits for the batch;
- reference log-probs are computed once before training (the initial policy *is* the reference), so
  no second model copy and no reference forward per step; step 1's pairs take theirs from the policy's own first
  forward; `reference: live` recomputes them each step (adapters disabled under LoRA, else a frozen copy);
- metrics stay on the device between log steps (no per-step host syncs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alignkit.models.load import ModelConfig
from alignkit.train.settings import DataSettings, OptimSettings, RunSettings

__all__ = ["DPOConfig", "train"]

log = logging.getLogger(__name__)

LossType = Literal["sigmoid", "ipo", "hinge", "robust", "simpo", "orpo"]


@dataclass
class DPOConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataSettings = field(default_factory=DataSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    run: RunSettings = field(default_factory=RunSettings)
    loss: LossType = field(default="sigmoid", metadata={"help": "sigmoid (DPO), robust, ipo, hinge, simpo, orpo"})
    beta: float = field(default=0.1, metadata={"help": "strength of the KL constraint (inverse temperature)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "assumed label-noise rate (cDPO for sigmoid, rDPO for robust)"})
    simpo_gamma: float = field(default=0.5, metadata={"help": "SimPO target reward margin"})
    pairs_per_step: int = field(default=8, metadata={"help": "preference pairs per optimizer step (all processes)"})
    pairs_per_micro_batch: int = field(default=4, metadata={"help": "pairs per forward pass; accumulation = pairs_per_step / this / processes"})
    reference: Literal["precompute", "live"] = field(default="precompute", metadata={"help": "reference log-probs computed once up front, or each step"})
    reference_model: str | None = field(default=None, metadata={"help": "a different model as reference (default: the initial policy)"})
    no_grad_batch_pairs: int | None = field(default=None, metadata={"help": "pairs per forward when no gradient is needed (reference log-probs, held-out eval); default 8 x pairs_per_micro_batch"})
    sft_coef: float = field(default=0.0, metadata={"help": "weight of the chosen reply's per-token NLL added to the loss (RPO; TRL's rpo_alpha)"})
    row_tokens: int | None = field(default=256, metadata={"help": "pairs are packed into rows of at most this many tokens (null: one row); attention costs row_length^2. Not used on CPU, where each micro-batch is one unpadded row and attention runs pair by pair"})
    logprob_chunk_tokens: int = field(default=1024, metadata={"help": "rows per LM-head chunk when gathering log-probs"})
    sample_prompts: int = field(default=3, metadata={"help": "held-out prompts generated from before and after training"})
    sample_max_new_tokens: int = field(default=64, metadata={"help": "length of those sample generations"})

    def validate(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.pairs_per_step % self.pairs_per_micro_batch:
            raise ValueError(f"pairs_per_step ({self.pairs_per_step}) must be a multiple of "
                             f"pairs_per_micro_batch ({self.pairs_per_micro_batch})")
        if self.pairs_per_micro_batch < 1:
            raise ValueError("pairs_per_micro_batch must be >= 1")
        if self.no_grad_batch_pairs is not None and self.no_grad_batch_pairs < 1:
            raise ValueError(f"no_grad_batch_pairs must be >= 1 or null, got {self.no_grad_batch_pairs}")
        if self.sft_coef < 0:
            raise ValueError(f"sft_coef must be >= 0, got {self.sft_coef}")
        if self.row_tokens is not None and self.row_tokens < 1:
            raise ValueError(f"row_tokens must be >= 1 or null, got {self.row_tokens}")
        if self.loss in ("simpo", "orpo") and self.reference_model:
            raise ValueError(f"loss {self.loss} is reference-free; remove reference_model")


# ---------------------------------------------------------------------------------------------- data


def _load_pairs(cfg: DPOConfig, tokenizer: Any) -> tuple[list[Any], list[Any]]:
    """Load, validate and tokenize train and eval pairs; raises before anything is written."""
    from alignkit.data.builtin import resolve_data
    from alignkit.data.load import load_preferences
    from alignkit.data.template import tokenize_pairs

    out = []
    for spec, limit in ((cfg.data.train, cfg.data.limit), (cfg.data.eval, None)):
        if not spec:
            out.append([])
            continue
        loaded = load_preferences(resolve_data(spec), split=cfg.data.split, skip_invalid=cfg.data.skip_invalid, limit=limit)
        log.info(loaded.summary())
        pairs, stats = tokenize_pairs(tokenizer, loaded.records, max_tokens=cfg.data.max_tokens,
                                      max_prompt_tokens=cfg.data.max_prompt_tokens, truncation=cfg.data.truncation)
        log.info("%s: %s", spec, stats.summary())
        out.append(pairs)
    return out[0], out[1]


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _progress(items: list[Any], desc: str, cfg: DPOConfig, rt: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False, disable=not (cfg.run.progress and rt.is_main))


def _micro_batches(cfg: DPOConfig, rt: Any, module: Any, pairs: list[Any], indices: list[int], size: int) -> list[Any]:
    """`indices` in batches of `size` pairs, laid out for how `module` attends.

    Per-pair attention (alignkit's CPU attention): one unpadded row, padded only to a multiple of 32 tokens, the token
    dimension of every matmul (AMX bf16 tiles: measured here, the weight-gradient matmul of a 576 x 1536 layer took
    1.19 ms for 699 tokens and 0.90 ms for 704; DPO step 2.05 -> 1.95 s). Otherwise rows of `row_tokens`, padded to a
    multiple of 16 on CUDA (aligned masks keep the fused attention kernels).
    """
    from alignkit.data.batch import pack_pairs

    if getattr(module, "per_segment_attention", False):
        row_tokens, pad_to = None, 32
    else:
        row_tokens, pad_to = cfg.row_tokens, 16 if getattr(rt.device, "type", "cpu") == "cuda" else 1
    return [pack_pairs([pairs[i] for i in indices[s : s + size]], indices[s : s + size], row_tokens, pad_to)
            for s in range(0, len(indices), size)]


def _no_grad_batches(cfg: DPOConfig, rt: Any, module: Any, pairs: list[Any], indices: list[int] | None = None) -> list[Any]:
    """Batches for forward-only passes: no activations are kept for a backward, so they can be larger (measured on the
    project's CPU, reference log-probs of 36 pairs: 3.2 s in batches of 4, 2.67 s in 16, 2.51 s in one batch)."""
    size = cfg.no_grad_batch_pairs or 8 * cfg.pairs_per_micro_batch
    return _micro_batches(cfg, rt, module, pairs, list(range(len(pairs))) if indices is None else indices, size)


# ------------------------------------------------------------------------------------ log-probs


def _pair_logps(module: Any, batch: Any) -> Any:
    """(B, 2) summed log-probs of [chosen, rejected] for each pair in a packed batch."""
    from alignkit.train.loop import sum_by_owner

    tok = module(batch.input_ids, batch.position_ids, batch.attention_mask, batch.pred_index, batch.targets,
                 batch.segments)
    return sum_by_owner(tok, batch.owner, 2 * batch.num_pairs).view(-1, 2)


def _reference_key(cfg: DPOConfig, pairs: list[Any]) -> str:
    return _fingerprint(cfg.model.name, cfg.reference_model, [(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in pairs])


def _reference_logps(cfg: DPOConfig, rt: Any, module: Any, pairs: list[Any], cache: Path | None,
                     skip: frozenset[int] = frozenset()) -> Any:
    """(n, 2) reference log-probs for every pair, computed once (no_grad) and cached on disk.

    Pairs in `skip` are left NaN and nothing is cached (the caller fills them in and saves); a valid cache is
    returned whole.
    """
    import torch

    key = _reference_key(cfg, pairs)
    if cache is not None and cache.is_file():
        saved = torch.load(cache, weights_only=True)
        if saved.get("key") == key:
            return saved["logps"]
    ref_module = module
    if cfg.reference_model:
        from dataclasses import replace

        from alignkit.models.load import load_model
        from alignkit.train.loop import TokenLogprobs

        ref = load_model(replace(cfg.model, name=cfg.reference_model, lora=None), for_training=False)
        ref_module = TokenLogprobs(ref.model, cfg.logprob_chunk_tokens)
    was_training = ref_module.training
    ref_module.eval()
    result = torch.full((len(pairs), 2), float("nan"))
    batches = _no_grad_batches(cfg, rt, ref_module, pairs, [i for i in range(len(pairs)) if i not in skip])
    with torch.no_grad(), rt.autocast():  # not inference_mode: autocast caches weight casts only outside it
        for batch in _progress(batches, "reference log-probs", cfg, rt):
            result[batch.index] = _pair_logps(ref_module, batch.to(rt.device)).float().cpu()
    ref_module.train(was_training)
    if not skip:
        _save_reference(rt, cache, key, result)
    return result


def _save_reference(rt: Any, cache: Path | None, key: str, logps: Any) -> None:
    import torch

    if cache is not None and rt.is_main:
        from alignkit.train.loop import atomic_write_bytes

        atomic_write_bytes(cache, lambda fh: torch.save({"key": key, "logps": logps}, fh))


def _references(cfg: DPOConfig, rt: Any, module: Any, train_pairs: list[Any], eval_pairs: list[Any], out: Path,
                resumed: bool) -> tuple[Any, Any, Any, bool]:
    """(train reference log-probs, held-out ones, a live scorer or None, whether step 1 fills in its own pairs).

    Reference-free losses get zeros; `reference: live` a scorer for the loop (held-out ones are still computed once).
    """
    import torch

    from alignkit.losses.preference import REFERENCE_FREE
    from alignkit.train.loop import step_batches

    if cfg.loss in REFERENCE_FREE:
        return torch.zeros(len(train_pairs), 2), torch.zeros(len(eval_pairs), 2), None, False
    ref_eval = torch.zeros(0, 2)
    if cfg.reference == "live" and not cfg.reference_model:
        from alignkit.train.rl_common import reference_scorer

        if eval_pairs:
            ref_eval = _reference_logps(cfg, rt, module, eval_pairs, None)
        return torch.zeros(0, 2), ref_eval, reference_scorer(module.model, cfg.logprob_chunk_tokens, _pair_logps), False
    first_from_policy = _first_step_from_policy(cfg, rt, module.model, resumed)
    first_step = next(step_batches(len(train_pairs), cfg.pairs_per_step, cfg.run.seed, 0))
    skip = frozenset(first_step) if first_from_policy else frozenset()
    ref_train = _reference_logps(cfg, rt, module, train_pairs, out / "reference_logps.pt", skip)
    first_from_policy = first_from_policy and bool(torch.isnan(ref_train).any())  # not after a full cache hit
    if eval_pairs:
        ref_eval = _reference_logps(cfg, rt, module, eval_pairs, out / "reference_logps_eval.pt")
    return ref_train, ref_eval, None, first_from_policy


def _first_step_from_policy(cfg: DPOConfig, rt: Any, policy: Any, resumed: bool) -> bool:
    """Whether step 1's reference log-probs come from the policy's own first forward.

    Before the first update the policy *is* the reference, and its first forward runs the same arithmetic as the
    reference pass (per-pair layout, same code path), so that pass can skip step 1's pairs: one step's forward less
    (11% of the reference pass in a 9-step run). Not with another reference model, a live reference, a resumed run,
    several processes, or active dropout (a train-mode forward would differ from the eval-mode reference).
    """
    import torch

    if cfg.reference != "precompute" or cfg.reference_model or resumed or rt.world_size != 1:
        return False
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in policy.modules()):
        return False
    return not getattr(getattr(policy, "config", None), "attention_dropout", 0.0)


def _loss(cfg: DPOConfig, logps: Any, ref: Any, batch: Any) -> Any:
    from alignkit.losses.preference import REFERENCE_FREE, preference_loss

    with_ref = cfg.loss not in REFERENCE_FREE
    out = preference_loss(
        cfg.loss, policy_chosen_logps=logps[:, 0], policy_rejected_logps=logps[:, 1],
        chosen_tokens=batch.chosen_tokens, rejected_tokens=batch.rejected_tokens,
        ref_chosen_logps=ref[:, 0] if with_ref else None, ref_rejected_logps=ref[:, 1] if with_ref else None,
        beta=cfg.beta, label_smoothing=cfg.label_smoothing, simpo_gamma=cfg.simpo_gamma,
        margin=batch.margin if cfg.loss == "sigmoid" else None,
    )
    if cfg.sft_coef:
        from dataclasses import replace

        from alignkit.losses.preference import chosen_nll

        out = replace(out, loss=out.loss + cfg.sft_coef * chosen_nll(logps[:, 0], batch.chosen_tokens))
    return out


# ------------------------------------------------------------------------------------ evaluation


def evaluate(cfg: DPOConfig, rt: Any, module: Any, pairs: list[Any], ref_logps: Any) -> dict[str, float]:
    """Held-out preference accuracy (chosen reward > rejected), mean reward margin and loss."""
    import torch

    if not pairs:
        return {}
    was_training = module.training
    module.eval()
    losses, margins, correct = [], [], []
    batches = _no_grad_batches(cfg, rt, module, pairs)
    with torch.no_grad(), rt.autocast():  # not inference_mode: autocast caches weight casts only outside it
        for batch in _progress(batches, "held-out eval", cfg, rt):
            batch = batch.to(rt.device)
            logps = _pair_logps(module, batch).float()
            out = _loss(cfg, logps, ref_logps[batch.index.cpu()].to(rt.device), batch)
            margin = out.chosen_rewards - out.rejected_rewards
            losses.append(out.loss)
            margins.append(margin)
            correct.append((margin > 0).float())
    module.train(was_training)
    margin = torch.cat(margins)
    return {"loss": torch.cat(losses).mean().item(), "accuracy": torch.cat(correct).mean().item(),
            "margin_mean": margin.mean().item(), "margin_std": margin.std().item() if len(margin) > 1 else 0.0,
            "pairs": len(pairs)}


def _samples(cfg: DPOConfig, model: Any, tokenizer: Any) -> list[dict[str, str]]:
    """Greedy replies to the first few held-out prompts (decoded from the tokenized eval set)."""
    from alignkit.data.builtin import resolve_data
    from alignkit.data.load import load_preferences
    from alignkit.generate.local import generate_local

    if not cfg.data.eval or cfg.sample_prompts <= 0:
        return []
    records = load_preferences(resolve_data(cfg.data.eval), split=cfg.data.split).records
    stride = max(1, len(records) // cfg.sample_prompts)  # spread over the set: mixed categories, not its head
    records = records[::stride][: cfg.sample_prompts]
    prompts = [[m.to_dict() for m in r.prompt] for r in records]
    log.info("generating %d sample replies (max %d tokens)", len(prompts), cfg.sample_max_new_tokens)
    replies = generate_local(model, tokenizer, prompts, max_new_tokens=cfg.sample_max_new_tokens)
    return [{"prompt": p[-1]["content"], "reply": r} for p, r in zip(prompts, replies)]


# ------------------------------------------------------------------------------------ training


def train(cfg: DPOConfig) -> dict[str, Any]:
    """Run DPO as configured; returns the summary also written to `output_dir/summary.json`."""
    import torch
    from tqdm.auto import tqdm

    from alignkit.config import save_config, to_dict
    from alignkit.errors import AlignkitError
    from alignkit.models.load import load_model
    from alignkit.train.loop import (Checkpointer, MetricsSink, Throughput, TokenLogprobs, atomic_write_text,
                                     make_optimizer, make_runtime, make_scheduler, optimizer_step, planned_steps,
                                     seed_everything, step_batches)

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
    train_pairs, eval_pairs = _load_pairs(cfg, tokenizer)  # bad data stops here, before any output
    total_steps = planned_steps(len(train_pairs), cfg.pairs_per_step, cfg.run)
    if rt.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")

    module = TokenLogprobs(policy, cfg.logprob_chunk_tokens).to(rt.device)
    t_ref = time.perf_counter()
    ref_train, ref_eval, live_ref, first_from_policy = _references(cfg, rt, module, train_pairs, eval_pairs, out,
                                                                   resume_from is not None)
    reference_s = time.perf_counter() - t_ref
    optimizer = make_optimizer(module, cfg.optim)
    scheduler = make_scheduler(optimizer, total_steps, cfg.optim)
    module, optimizer = rt.accelerator.prepare(module, optimizer)
    raw = rt.accelerator.unwrap_model(module)
    start_step, summary = 0, {"before": {}, "samples_before": []}
    if resume_from is not None:
        state = ckpt.load(resume_from, raw.model, optimizer, scheduler)
        start_step, summary = state["step"], state["summary"]
        log.info("resumed from %s (step %d of %d)", resume_from, start_step, total_steps)
    elif rt.is_main:
        summary["before"] = evaluate(cfg, rt, raw, eval_pairs, ref_eval)
        summary["samples_before"] = _samples(cfg, raw.model, tokenizer)

    sink = MetricsSink(out, cfg.run, to_dict(cfg), enabled=rt.is_main, start_step=start_step)
    micro_per_rank = cfg.pairs_per_step // cfg.pairs_per_micro_batch // rt.world_size
    if micro_per_rank < 1 or cfg.pairs_per_step % (cfg.pairs_per_micro_batch * rt.world_size):
        raise AlignkitError(f"pairs_per_step={cfg.pairs_per_step} does not split into {rt.world_size} processes x "
                            f"micro-batches of {cfg.pairs_per_micro_batch}")
    meter, sums = Throughput(), torch.zeros(6, device=rt.device)  # loss, acc, margin, r_chosen, r_rejected, pairs
    bar = tqdm(total=total_steps, initial=start_step, desc="dpo", disable=not (cfg.run.progress and rt.is_main))
    batches = step_batches(len(train_pairs), cfg.pairs_per_step, cfg.run.seed, start_step)
    module.train()
    t_loop, loop_tokens = time.perf_counter(), 0
    for step in range(start_step, total_steps):
        indices = next(batches)[rt.rank :: rt.world_size]
        micro = _micro_batches(cfg, rt, raw, train_pairs, indices, cfg.pairs_per_micro_batch)
        for k, batch in enumerate(micro):
            batch = batch.to(rt.device)
            sync = rt.accelerator.no_sync(module) if k < len(micro) - 1 else torch.enable_grad()
            with sync, rt.autocast():
                logps = _pair_logps(module, batch).float()
                if live_ref is not None:
                    ref = live_ref(batch)
                elif first_from_policy and step == 0:  # the policy has not moved yet: it is the reference
                    ref = logps.detach()
                    ref_train[batch.index.cpu()] = ref.cpu()
                else:
                    ref = ref_train[batch.index.cpu()].to(rt.device)
                res = _loss(cfg, logps, ref, batch)
                # mean over the step's pairs; DDP averages over processes, so scale by world size
                rt.accelerator.backward(res.loss.sum() * rt.world_size / cfg.pairs_per_step)
            margin = (res.chosen_rewards - res.rejected_rewards).detach()
            sums += torch.stack([res.loss.detach().sum(), (margin > 0).float().sum(), margin.sum(),
                                 res.chosen_rewards.sum(), res.rejected_rewards.sum(),
                                 torch.tensor(float(batch.num_pairs), device=rt.device)])
            meter.add(batch.logical_tokens * rt.world_size)
            loop_tokens += batch.logical_tokens * rt.world_size
        grad_norm = optimizer_step(rt, module, optimizer, scheduler, cfg.optim.max_grad_norm)
        if first_from_policy and step == 0:
            if torch.isnan(ref_train).any():
                raise AlignkitError("internal: step 1 did not fill every reference log-prob the reference pass skipped")
            _save_reference(rt, out / "reference_logps.pt", _reference_key(cfg, train_pairs), ref_train)
        done = step + 1
        if done % cfg.run.log_every_steps == 0 or done == total_steps:
            metrics = _step_metrics(rt, sums, grad_norm, scheduler, meter)
            sums.zero_()
            sink.log(done, metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['accuracy']:.2f}",
                            margin=f"{metrics['margin']:.3f}", tok_s=f"{metrics['tokens_per_s']:.0f}")
        if cfg.run.eval_every_steps and done % cfg.run.eval_every_steps == 0 and rt.is_main and eval_pairs:
            sink.log(done, {f"eval/{k}": v for k, v in evaluate(cfg, rt, raw, eval_pairs, ref_eval).items()})
        if cfg.run.save_every_steps and done % cfg.run.save_every_steps == 0 and done < total_steps and rt.is_main:
            ckpt.save(done, raw.model, optimizer, scheduler, {"summary": summary})
        bar.update(1)
    bar.close()
    sink.close()
    # wall-clock split, for users and for benchmarks/dpo_vs_trl.py (tokens: prompt counted per reply, no padding)
    summary["timing"] = {"reference_s": reference_s, "reference_skipped_first_step": first_from_policy,
                         "loop_s": time.perf_counter() - t_loop, "loop_tokens": loop_tokens,
                         "steps_run": total_steps - start_step}
    return _finish(cfg, rt, raw, tokenizer, eval_pairs, ref_eval, summary, total_steps, out, atomic_write_text)


def _step_metrics(rt: Any, sums: Any, grad_norm: Any, scheduler: Any, meter: Any) -> dict[str, float]:
    """One host sync per log step: reduce the accumulated sums across processes and read them."""
    total = rt.accelerator.reduce(sums.clone(), reduction="sum").tolist()
    pairs = max(total[5], 1.0)
    return {"loss": total[0] / pairs, "accuracy": total[1] / pairs, "margin": total[2] / pairs,
            "reward_chosen": total[3] / pairs, "reward_rejected": total[4] / pairs,
            "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
            "lr": scheduler.get_last_lr()[0], "tokens_per_s": meter.read()}


def _finish(cfg: DPOConfig, rt: Any, raw: Any, tokenizer: Any, eval_pairs: list[Any], ref_eval: Any,
            summary: dict[str, Any], total_steps: int, out: Path, write: Any) -> dict[str, Any]:
    """After the loop: held-out eval, sample generations, final model, summary.json."""
    rt.accelerator.wait_for_everyone()
    if not rt.is_main:
        return summary
    summary["after"] = evaluate(cfg, rt, raw, eval_pairs, ref_eval)
    summary["samples_after"] = _samples(cfg, raw.model, tokenizer)
    summary["steps"] = total_steps
    summary["processes"] = rt.world_size
    final = out / "final"
    from alignkit.train.save import save_final

    save_final(raw.model, tokenizer, final)
    summary["final_model"] = str(final)
    write(out / "summary.json", json.dumps(summary, indent=2))
    return summary
