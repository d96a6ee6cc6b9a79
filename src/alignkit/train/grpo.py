"""Group-relative RL: GRPO (Shao et al. 2024), RLOO (Ahmadian et al. 2024), Dr. GRPO, GSPO. No value model.

Read top to bottom: config -> model -> prompts and rewards -> the loop (sample G completions per prompt,
score them, group-relative advantages, clipped policy loss, optional KL to the reference) -> final save.

    alignkit train grpo --config recipes/grpo-gsm8k.yaml
    alignkit train grpo --config recipes/grpo-gsm8k.yaml baseline=rloo scale_rewards=none   # RLOO

What makes it fast on one machine:
- rollouts prefill each prompt once for its G samples and drop finished samples from the batch
  (`alignkit.train.rollout.GroupSampler`);
- training packs [prompt | completion 1 | ... | completion G] into one padding-free row: the prompt is
  computed once per group instead of G times, and the LM head runs only on completion tokens, in chunks;
- on-policy updates (iterations_per_batch = 1) reuse the training forward as the "old" policy, and no
  reference model runs unless the KL term or the KL monitor asks for it (adapters disabled under LoRA).
Loss normalization uses counts over the whole step, so gradient accumulation never changes the update.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alignkit.models.load import ModelConfig
from alignkit.rewards.spec import RewardSpec
from alignkit.train.monitors import MonitorSettings
from alignkit.train.rollout import RolloutSettings
from alignkit.train.settings import DataSettings, OptimSettings, RunSettings

__all__ = ["GRPOConfig", "train"]

log = logging.getLogger(__name__)


@dataclass
class GRPOConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataSettings = field(default_factory=DataSettings)
    optim: OptimSettings = field(default_factory=lambda: OptimSettings(lr=1e-5, warmup_ratio=0.0))
    run: RunSettings = field(default_factory=RunSettings)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    rewards: list[RewardSpec] = field(default_factory=list, metadata={"help": "reward functions, summed with their weights"})
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    prompts_per_step: int = field(default=4, metadata={"help": "prompts per optimizer step (all processes)"})
    samples_per_prompt: int = field(default=8, metadata={"help": "G: completions sampled per prompt (the group)"})
    prompts_per_micro_batch: int = field(default=1, metadata={"help": "prompt groups packed into one forward pass"})
    baseline: Literal["mean", "rloo"] = field(default="mean", metadata={"help": "group mean (GRPO) or leave-one-out mean (RLOO)"})
    scale_rewards: Literal["group", "batch", "none"] = field(default="group", metadata={"help": "divide advantages by the group's std, the batch's, or not (Dr. GRPO)"})
    ratio_level: Literal["token", "sequence"] = field(default="token", metadata={"help": "importance ratio per token (GRPO) or per sequence (GSPO)"})
    clip_low: float = field(default=0.2, metadata={"help": "eps_low of the clipped ratio"})
    clip_high: float | None = field(default=None, metadata={"help": "eps_high (DAPO clip-higher, e.g. 0.28); null = clip_low"})
    loss_aggregation: Literal["token", "sequence", "fixed"] = field(default="token", metadata={"help": "token: / tokens in the step (DAPO); sequence: mean per response (GRPO); fixed: / (responses x max_new_tokens) (Dr. GRPO)"})
    iterations_per_batch: int = field(default=1, metadata={"help": "optimizer updates per rollout batch (mu); > 1 computes old log-probs"})
    kl_coef: float = field(default=0.0, metadata={"help": "beta of the KL-to-reference term in the loss (0 = none)"})
    kl_estimator: Literal["k1", "k2", "k3"] = field(default="k3", metadata={"help": "KL estimator of that term"})
    monitor_kl: bool = field(default=True, metadata={"help": "compute KL to the reference for the monitors even when kl_coef = 0 (one extra no-grad forward)"})
    mask_truncated: bool = field(default=False, metadata={"help": "leave completions cut at max_new_tokens out of the loss (DAPO overlong filtering)"})
    logprob_chunk_tokens: int = field(default=1024, metadata={"help": "rows per LM-head chunk when gathering log-probs"})

    def validate(self) -> None:
        if not self.rewards:
            raise ValueError("rewards is empty; give at least one (e.g. {kind: rule, name: gsm8k_answer})")
        if self.samples_per_prompt < 2:
            raise ValueError("samples_per_prompt must be >= 2: advantages are relative to the group")
        if self.prompts_per_micro_batch < 1 or self.prompts_per_step % self.prompts_per_micro_batch:
            raise ValueError(f"prompts_per_step ({self.prompts_per_step}) must be a multiple of "
                             f"prompts_per_micro_batch ({self.prompts_per_micro_batch}) >= 1")
        if self.iterations_per_batch < 1 or self.kl_coef < 0:
            raise ValueError("iterations_per_batch must be >= 1 and kl_coef >= 0")


# ----------------------------------------------------------------------------------------- helpers


def _micro_batches(rollouts: list[Any], prompt_count: int, per_micro: int, g: int) -> list[Any]:
    """Rollouts are prompt-major (G per prompt); each micro-batch packs `per_micro` prompt groups."""
    from alignkit.data.rollout_batch import RolloutGroup, pack_groups

    groups = [RolloutGroup(rollouts[i * g].prompt_ids, [r.ids for r in rollouts[i * g : (i + 1) * g]],
                           list(range(i * g, (i + 1) * g))) for i in range(prompt_count)]
    return [pack_groups(groups[s : s + per_micro]) for s in range(0, len(groups), per_micro)]


def _no_grad_logps(score: Any, micro: list[Any], rt: Any) -> list[Any]:
    """Per micro-batch (N,) log-probs under no_grad, from `score(batch)` (old policy or reference)."""
    import torch

    with torch.no_grad(), rt.autocast():
        return [score(b).float() for b in micro]


def _policy_logps(module: Any, b: Any) -> Any:
    """(N,) log-probs of the completion tokens of a packed rollout batch."""
    return module(b.input_ids, b.position_ids, b.attention_mask, b.pred_index, b.targets).float()


def _update(cfg: GRPOConfig, rt: Any, module: Any, optimizer: Any, scheduler: Any, micro: list[Any], reference: Any,
            advantages: Any, keep: Any, tokens: float, sequences: float) -> tuple[Any, Any, Any]:
    """`iterations_per_batch` optimizer steps on one batch of rollouts.

    Returns (sums: loss, clipped tokens, KL over tokens, tokens), the per-completion KL of the sampling
    policy to the reference (zeros without a reference), and the last gradient norm.
    """
    import torch

    from alignkit.data.rollout_batch import to_grid
    from alignkit.losses.policy import aggregate, clipped_policy_loss, kl_penalty, policy_ratio
    from alignkit.train.loop import optimizer_step

    raw = rt.accelerator.unwrap_model(module)
    ref_lp = _no_grad_logps(reference, micro, rt) if reference is not None else None
    old_lp = _no_grad_logps(lambda b: _policy_logps(raw, b), micro, rt) if cfg.iterations_per_batch > 1 else None
    seq_kl = torch.zeros(len(keep))
    sums = torch.zeros(4, device=rt.device)
    grad_norm = None
    for it in range(cfg.iterations_per_batch):
        for k, b in enumerate(micro):
            full = to_grid(torch.ones_like(b.targets, dtype=torch.float32), b)  # (S, T): 1 on completion tokens
            mask = full * keep[b.index.cpu()].to(rt.device)[:, None]  # minus masked-out (truncated) completions
            adv = advantages[b.index.cpu()].to(rt.device)[:, None]  # (S, 1): one advantage per completion
            sync = rt.accelerator.no_sync(module) if k < len(micro) - 1 else torch.enable_grad()
            with sync, rt.autocast():
                logp = to_grid(_policy_logps(module, b), b)  # (S, T)
                old = to_grid(old_lp[k], b) if old_lp is not None else logp.detach()  # on-policy: ratio 1
                ratio = policy_ratio(logp, old, mask, cfg.ratio_level)
                per_token, clipped = clipped_policy_loss(ratio, adv, clip_low=cfg.clip_low, clip_high=cfg.clip_high)
                kl = kl_penalty(logp, to_grid(ref_lp[k], b), cfg.kl_estimator) if ref_lp is not None else None
                if cfg.kl_coef > 0:
                    per_token = per_token + cfg.kl_coef * kl
                loss = aggregate(per_token, mask, cfg.loss_aggregation, tokens=tokens, sequences=sequences,
                                 max_tokens=cfg.rollout.max_new_tokens)
                rt.accelerator.backward(loss * rt.world_size)
            if kl is not None and it == 0:  # KL(sampling policy || reference) per completion, for the monitors
                seq_kl[b.index.cpu()] = (kl_penalty(logp.detach(), to_grid(ref_lp[k], b), "k3") * full).sum(1).cpu()
            sums += torch.stack([loss.detach(), (clipped * mask).sum(),
                                 (kl.detach() * full).sum() if kl is not None else loss.new_zeros(()), full.sum()])
        grad_norm = optimizer_step(rt, module, optimizer, scheduler, cfg.optim.max_grad_norm)
    return sums, seq_kl, grad_norm


def _step_metrics(cfg: GRPOConfig, result: Any, scores: Any, lengths: Any, rollouts: list[Any], sums: Any,
                  grad_norm: Any, scheduler: Any, with_kl: bool) -> dict[str, float]:
    s = sums.tolist()
    parts = {f"reward/{k}": sum(v) / len(v) for k, v in result.parts.items() if len(result.parts) > 1}
    return {
        "reward": scores.mean().item(), "reward_std": scores.std().item() if len(scores) > 1 else 0.0, **parts,
        "loss": s[0] / cfg.iterations_per_batch, "clip_fraction": s[1] / max(s[3], 1.0),
        **({"kl": s[2] / max(s[3], 1.0)} if with_kl else {}),
        "completion_tokens": lengths.mean().item(),
        "truncated": 1.0 - sum(r.stopped for r in rollouts) / len(rollouts),
        "zero_std_groups": (scores.view(-1, cfg.samples_per_prompt).std(1) == 0).float().mean().item(),
        "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"), "lr": scheduler.get_last_lr()[0],
    }


# ---------------------------------------------------------------------------------------- training


def train(cfg: GRPOConfig) -> dict[str, Any]:
    """Run GRPO/RLOO as configured; returns the summary also written to `output_dir/summary.json`."""
    import torch
    from tqdm.auto import tqdm

    from alignkit.config import save_config, to_dict
    from alignkit.generate.base import SamplingParams
    from alignkit.losses.policy import group_advantages
    from alignkit.models.load import load_model
    from alignkit.rewards.spec import build_one, build_reward
    from alignkit.train.loop import (MetricsSink, TokenLogprobs, make_optimizer, make_runtime, make_scheduler,
                                     planned_steps, seed_everything, step_batches)
    from alignkit.train.monitors import RewardHackingMonitor
    from alignkit.train.rl_common import (eval_during_run, evaluate_policy, finish_run, prepare_prompts,
                                          reference_scorer, score_rollouts, start_run_dir)
    from alignkit.train.rollout import collect_rollouts, make_sampler, sampling_dtype

    rt = make_runtime(cfg.run, cfg.model.device)
    seed_everything(cfg.run.seed)
    out = Path(cfg.run.output_dir)
    ckpt, resume_from = start_run_dir(cfg.run)

    loaded = load_model(cfg.model)
    policy, tokenizer = loaded.model, loaded.tokenizer
    train_set, eval_set = prepare_prompts(cfg.data, cfg.rollout, tokenizer)  # bad data stops here
    total_steps = planned_steps(len(train_set), cfg.prompts_per_step, cfg.run)
    reward_fn = build_reward(cfg.rewards, str(rt.device))
    gold_fn = build_one(cfg.monitor.gold, str(rt.device)) if cfg.monitor.gold else None
    if rt.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")

    module = TokenLogprobs(policy, cfg.logprob_chunk_tokens).to(rt.device)
    optimizer = make_optimizer(module, cfg.optim)
    scheduler = make_scheduler(optimizer, total_steps * cfg.iterations_per_batch, cfg.optim)
    module, optimizer = rt.accelerator.prepare(module, optimizer)
    raw = rt.accelerator.unwrap_model(module)
    sampler = make_sampler(cfg.rollout.backend, raw.model, tokenizer, cfg.rollout.batch_size,
                           sampling_dtype(cfg.rollout.dtype, rt.autocast))
    reference = reference_scorer(raw.model, cfg.logprob_chunk_tokens) if cfg.kl_coef > 0 or cfg.monitor_kl else None
    monitor = RewardHackingMonitor(cfg.monitor)
    start_step, summary = 0, {"before": {}, "samples_before": []}
    if resume_from is not None:
        state = ckpt.load(resume_from, raw.model, optimizer, scheduler)
        start_step, summary = state["step"], state["summary"]
        monitor.load_state_dict(state["monitor"])
        log.info("resumed from %s (step %d of %d)", resume_from, start_step, total_steps)
    elif rt.is_main:
        summary["before"] = evaluate_policy(sampler, tokenizer, eval_set, reward_fn, gold_fn, cfg.rollout)
        summary["samples_before"] = summary["before"].pop("samples", [])
        monitor.record_eval(0, summary["before"])

    sink = MetricsSink(out, cfg.run, to_dict(cfg), enabled=rt.is_main, start_step=start_step)
    g = cfg.samples_per_prompt
    bar = tqdm(total=total_steps, initial=start_step, desc="grpo", disable=not (cfg.run.progress and rt.is_main))
    batches = step_batches(len(train_set), cfg.prompts_per_step, cfg.run.seed, start_step)
    t_loop, stop_reason, gen_tokens_total, done = time.perf_counter(), None, 0, start_step
    module.train()
    for step in range(start_step, total_steps):
        t0 = time.perf_counter()
        idx = next(batches)[rt.rank :: rt.world_size]
        # 1. rollouts: G completions per prompt, seeded by (seed, step) so a resumed run samples the same
        params = SamplingParams(max_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                                top_p=cfg.rollout.top_p, n=g, seed=cfg.run.seed * 1_000_003 + step)
        rollouts = collect_rollouts(sampler, tokenizer, [train_set.chats[i] for i in idx],
                                    [train_set.ids[i] for i in idx], params)
        for r in rollouts:
            r.prompt_index = idx[r.prompt_index]  # index into train_set, for the rewards' chats and meta
        t_gen = time.perf_counter()
        # 2. rewards and group-relative advantages (one scalar per completion)
        result = score_rollouts(reward_fn, train_set, rollouts)
        scores = torch.tensor(result.scores, dtype=torch.float32)
        advantages = group_advantages(scores.view(-1, g), baseline=cfg.baseline, scale=cfg.scale_rewards).view(-1)
        if bool((scores.view(-1, g).std(1) == 0).all()):
            log.warning("step %d: every group's rewards are equal (%.3g...): zero advantages, so this update leaves "
                        "the policy unchanged; a reward that varies within a group (or a larger "
                        "rollout.max_new_tokens) gives a learning signal", step + 1, scores[0].item())
        keep = torch.tensor([1.0 if (r.stopped or not cfg.mask_truncated) else 0.0 for r in rollouts])
        lengths = torch.tensor([float(len(r.ids)) for r in rollouts])
        # step-wide denominators (all micro-batches, all processes): accumulation never changes the update
        counts = rt.accelerator.reduce(torch.stack([(lengths * keep).sum(), keep.sum()]).to(rt.device), "sum")
        tokens, sequences = max(counts[0].item(), 1.0), max(counts[1].item(), 1.0)
        t_reward = time.perf_counter()
        # 3. the update: packed groups, clipped policy loss (+ beta * KL to the reference)
        micro = [b.to(rt.device) for b in _micro_batches(rollouts, len(idx), cfg.prompts_per_micro_batch, g)]
        sums, seq_kl, grad_norm = _update(cfg, rt, module, optimizer, scheduler, micro, reference, advantages, keep,
                                          tokens, sequences)
        done = step + 1
        t_end = time.perf_counter()
        gen_tokens = int(lengths.sum().item())
        gen_tokens_total += gen_tokens
        # 4. monitors and metrics (one host read per step)
        gold = score_rollouts(gold_fn, train_set, rollouts).scores if gold_fn is not None else None
        metrics = monitor.record(done, proxy=result.scores, kl=seq_kl.tolist() if reference is not None else None,
                                 lengths=lengths.tolist(), gold=gold, disagreement=result.disagreement)
        metrics.update(_step_metrics(cfg, result, scores, lengths, rollouts, sums, grad_norm, scheduler,
                                     reference is not None))
        metrics.update({"rollout_s": t_gen - t0, "reward_s": t_reward - t_gen, "train_s": t_end - t_reward,
                        "tokens_per_s": gen_tokens * rt.world_size / max(t_end - t0, 1e-9)})
        if done % cfg.run.log_every_steps == 0 or done == total_steps:
            sink.log(done, metrics)
        bar.set_postfix(reward=f"{metrics['reward']:.3f}", len=f"{metrics['completion_tokens']:.0f}")
        eval_during_run("grpo", cfg, rt, done, sampler, tokenizer, eval_set, reward_fn, gold_fn, monitor, sink)
        stop_reason = monitor.should_stop()
        if cfg.run.save_every_steps and done % cfg.run.save_every_steps == 0 and done < total_steps and rt.is_main:
            ckpt.save(done, raw.model, optimizer, scheduler, {"summary": summary, "monitor": monitor.state_dict()})
        bar.update(1)
        if stop_reason:
            log.warning("early stop at step %d: %s", done, stop_reason)
            break
    bar.close()
    sink.close()
    summary["timing"] = {"loop_s": time.perf_counter() - t_loop, "steps_run": done - start_step,
                         "completion_tokens": gen_tokens_total}
    return finish_run("grpo", cfg, rt, raw.model, tokenizer, sampler, eval_set, reward_fn, gold_fn, monitor, summary,
                      stop_reason)

