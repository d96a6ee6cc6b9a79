"""PPO for RLHF, the InstructGPT recipe (Ouyang et al. 2022; Ziegler et al. 2019; Stiennon et al. 2020).

Read top to bottom: config -> policy, value network, reference -> prompts and rewards -> the loop
(sample, score, per-token KL penalty, GAE, several epochs of clipped policy + value updates) -> save.

    alignkit train ppo --config recipes/ppo-tiny.yaml
    alignkit train ppo --config recipes/ppo-gsm8k.yaml kl_estimator=k3 adaptive_kl=true

Per step:
1. sample completions of `prompts_per_step` prompts (EOS ends a completion; one cut at max_new_tokens
   is "truncated" and may be penalized: `missing_eos_penalty`);
2. score them: a reward model, a judge, Python rules, or a weighted sum (`rewards`);
3. one no-grad pass gives the rollout policy's log-probs and values, one more the reference's
   (adapters disabled under LoRA: no second copy);
4. per-token reward r_t = -beta * KL_t (k1 or k3 estimator), plus the score on the last token;
   beta fixed or adapted toward `kl_target` (Ziegler et al. 2019);
5. GAE (vectorized, alignkit.losses.value.gae), returns, whitened advantages;
6. `ppo_epochs` passes over the batch in `minibatches_per_epoch` minibatches, each an optimizer step
   on the clipped policy loss + value_coef * clipped value loss (token mean over the minibatch).
The value network is a scalar head on the policy's own hidden states (`value: head`, one forward for
both), or a separate model (`value: model`, initialized from `value_model`, e.g. the reward model, as in
InstructGPT, or from the policy's base model).
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

__all__ = ["PPOConfig", "train", "actor_critic"]

log = logging.getLogger(__name__)


@dataclass
class PPOConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataSettings = field(default_factory=DataSettings)
    optim: OptimSettings = field(default_factory=lambda: OptimSettings(lr=1e-5, warmup_ratio=0.0))
    run: RunSettings = field(default_factory=RunSettings)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    rewards: list[RewardSpec] = field(default_factory=list, metadata={"help": "reward functions, summed with their weights"})
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    prompts_per_step: int = field(default=16, metadata={"help": "prompts sampled per PPO step (all processes)"})
    samples_per_prompt: int = field(default=1, metadata={"help": "completions per prompt"})
    prompts_per_micro_batch: int = field(default=4, metadata={"help": "prompt groups packed into one forward pass"})
    minibatches_per_epoch: int = field(default=1, metadata={"help": "optimizer steps per pass over the rollouts"})
    ppo_epochs: int = field(default=4, metadata={"help": "passes over each batch of rollouts"})
    value: Literal["head", "model"] = field(default="head", metadata={"help": "head: a scalar head on the policy's hidden states; model: a separate value network"})
    value_model: str | None = field(default=None, metadata={"help": "value: model only: a sequence-classification dir to start from (e.g. the reward model); null = the policy's base"})
    value_coef: float = field(default=0.1, metadata={"help": "weight of the value loss"})
    clip_policy: float = field(default=0.2, metadata={"help": "eps of the clipped policy ratio"})
    clip_value: float | None = field(default=0.2, metadata={"help": "eps of the clipped value loss (null = unclipped)"})
    gamma: float = field(default=1.0, metadata={"help": "discount"})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda"})
    kl_coef: float = field(default=0.05, metadata={"help": "beta: weight of the per-token KL penalty in the reward (initial value if adaptive)"})
    kl_estimator: Literal["k1", "k2", "k3"] = field(default="k1", metadata={"help": "per-token KL estimator in the reward"})
    adaptive_kl: bool = field(default=False, metadata={"help": "adapt beta toward kl_target (Ziegler et al. 2019)"})
    kl_target: float = field(default=6.0, metadata={"help": "target KL per response for the adaptive controller"})
    kl_horizon: float = field(default=10000.0, metadata={"help": "controller horizon in responses"})
    whiten_advantages: bool = field(default=True, metadata={"help": "normalize advantages over the step's tokens"})
    whiten_rewards: bool = field(default=False, metadata={"help": "scale per-token rewards to unit variance (no mean shift)"})
    missing_eos_penalty: float | None = field(default=None, metadata={"help": "subtracted from the score of a completion cut at max_new_tokens (e.g. 1.0)"})
    logprob_chunk_tokens: int = field(default=1024, metadata={"help": "rows per LM-head chunk when gathering log-probs"})

    def validate(self) -> None:
        if not self.rewards:
            raise ValueError("rewards is empty; give at least one (reward model, judge or rule)")
        if self.prompts_per_micro_batch < 1 or self.prompts_per_step % self.prompts_per_micro_batch:
            raise ValueError(f"prompts_per_step ({self.prompts_per_step}) must be a multiple of "
                             f"prompts_per_micro_batch ({self.prompts_per_micro_batch}) >= 1")
        if self.minibatches_per_epoch < 1 or self.prompts_per_step % self.minibatches_per_epoch:
            raise ValueError(f"prompts_per_step ({self.prompts_per_step}) must split into minibatches_per_epoch "
                             f"({self.minibatches_per_epoch}) equal minibatches")
        if self.ppo_epochs < 1 or self.samples_per_prompt < 1:
            raise ValueError("ppo_epochs and samples_per_prompt must be >= 1")
        if self.kl_coef < 0 or not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ValueError("kl_coef must be >= 0 and gamma, lam in [0, 1]")
        if self.value_model and self.value != "model":
            raise ValueError("value_model needs value: model")


# ------------------------------------------------------------------------------------------- model


def actor_critic(policy: Any, value_net: Any | None, chunk_tokens: int) -> Any:
    """nn.Module: packed rollouts -> ((N,) log-probs of the completion tokens, (N,) values V(s_t)).

    V(s_t) is read at the position that predicts token t, i.e. the state before the token is emitted.
    With `value_net` None the value head sits on the policy's hidden states (one forward for both).
    """
    import torch

    from alignkit.losses.logprobs import token_logprobs
    from alignkit.models.load import decoder_and_head, unwrap

    class ActorCritic(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = policy
            self.value_model = value_net
            if value_net is None:
                width = unwrap(policy).config.hidden_size
                self.value_head = torch.nn.Linear(width, 1)
                torch.nn.init.zeros_(self.value_head.weight)  # V = 0 at the start: no noise in the first advantages
                torch.nn.init.zeros_(self.value_head.bias)

        def forward(self, input_ids: Any, position_ids: Any, attention_mask: Any, pred_index: Any,
                    targets: Any) -> tuple[Any, Any]:
            decoder, head = decoder_and_head(self.model)
            kw = {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": attention_mask,
                  "use_cache": False}
            hidden = decoder(**kw).last_hidden_state[0].index_select(0, pred_index)  # (N, D)
            logps = token_logprobs(hidden, head.weight, targets, chunk_size=chunk_tokens, bias=head.bias)
            if self.value_model is None:
                return logps, self.value_head(hidden).squeeze(-1).float()
            base = unwrap(self.value_model)
            v_hidden = getattr(base, base.base_model_prefix)(**kw).last_hidden_state[0].index_select(0, pred_index)
            v_head = base.score if hasattr(base, "score") else base.classifier
            return logps, v_head(v_hidden).float().mean(-1)  # several labels (an RM ensemble): their mean

    return ActorCritic()


def _value_network(cfg: PPOConfig) -> Any | None:
    """None for a value head on the policy, else a sequence-classification model used per token."""
    if cfg.value == "head":
        return None
    if cfg.value_model:
        from alignkit.rewards.model import load_reward_model

        model, _ = load_reward_model(cfg.value_model, device="cpu")
        model.requires_grad_(True).train()
        if cfg.model.lora is not None:
            from peft import LoraConfig, get_peft_model

            lora = cfg.model.lora
            model = get_peft_model(model, LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                     target_modules=list(lora.target_modules), task_type="SEQ_CLS"))
        return model
    from alignkit.train.rm import sequence_classifier

    return sequence_classifier(cfg.model, 1, cfg.run.seed)[0]


# ------------------------------------------------------------------------------------------ helpers


def _pack(rollouts: list[Any], groups: list[int], per_micro: int, n: int) -> list[Any]:
    """Micro-batches of `per_micro` prompt groups (each: the prompt once + its n completions)."""
    from alignkit.data.rollout_batch import RolloutGroup, pack_groups

    made = [RolloutGroup(rollouts[i * n].prompt_ids, [r.ids for r in rollouts[i * n : (i + 1) * n]],
                         list(range(i * n, (i + 1) * n))) for i in groups]
    return [pack_groups(made[s : s + per_micro]) for s in range(0, len(made), per_micro)]


def _grid(flats: list[Any], micro: list[Any], rows: int, width: int) -> Any:
    """Scatter per-micro-batch (N,) tensors into one (rows, width) grid indexed by rollout."""
    import torch

    from alignkit.data.rollout_batch import to_grid

    out = torch.zeros(rows, width, device=flats[0].device)
    for flat, b in zip(flats, micro):
        out[b.index] = to_grid(flat, b, width)
    return out


def _advantages(cfg: PPOConfig, scores: Any, old_lp: Any, ref_lp: Any, values: Any, mask: Any, lengths: Any,
                beta: float) -> tuple[Any, Any, Any]:
    """Per-token rewards (KL penalty + score at the last token) -> (advantages, returns, per-token KL)."""
    import torch

    from alignkit.losses.policy import kl_penalty, whiten
    from alignkit.losses.value import gae

    kl = kl_penalty(old_lp, ref_lp, cfg.kl_estimator) * mask  # (R, T)
    rewards = -beta * kl
    rewards[torch.arange(len(lengths)), lengths - 1] += scores  # the score arrives with the last token
    if cfg.whiten_rewards:
        rewards = whiten(rewards, mask, shift_mean=False)
    adv, returns = gae(rewards, values, mask, gamma=cfg.gamma, lam=cfg.lam)
    if cfg.whiten_advantages:
        adv = whiten(adv, mask)
    return adv, returns, kl


def _scoring_pass(cfg: PPOConfig, rt: Any, module: Any, reference: Any, rollouts: list[Any], n_prompts: int,
                  lengths: Any) -> tuple[Any, Any, Any]:
    """(R, T) log-probs and values of the rollout policy and log-probs of the reference, under no_grad."""
    import torch

    raw = rt.accelerator.unwrap_model(module)
    micro = [b.to(rt.device) for b in _pack(rollouts, list(range(n_prompts)), cfg.prompts_per_micro_batch,
                                            cfg.samples_per_prompt)]
    module.eval()  # no dropout in the scoring pass
    with torch.no_grad(), rt.autocast():
        old = [raw(b.input_ids, b.position_ids, b.attention_mask, b.pred_index, b.targets) for b in micro]
        ref = [reference(b) for b in micro]
    module.train()
    rows, width = len(rollouts), int(lengths.max())
    return (_grid([o[0].float() for o in old], micro, rows, width), _grid([o[1].float() for o in old], micro, rows, width),
            _grid([r.float() for r in ref], micro, rows, width))


def _ppo_epochs(cfg: PPOConfig, rt: Any, module: Any, optimizer: Any, scheduler: Any, rollouts: list[Any],
                n_prompts: int, t: dict[str, Any], seed: int) -> tuple[Any, Any]:
    """`ppo_epochs` shuffled passes, each `minibatches_per_epoch` optimizer steps on the clipped losses.

    `t` holds the (R, T) rollout tensors: old_lp, old_v, adv, returns, mask. Returns the summed statistics
    (policy loss, value loss, clipped, value clipped, approx KL, tokens) and the last gradient norm.
    """
    import torch

    from alignkit.data.rollout_batch import to_grid
    from alignkit.losses.policy import aggregate, clipped_policy_loss, kl_penalty
    from alignkit.losses.value import clipped_value_loss
    from alignkit.train.loop import optimizer_step

    sums = torch.zeros(6, device=rt.device)
    order_gen = torch.Generator().manual_seed(seed)
    per_mb, grad_norm = n_prompts // cfg.minibatches_per_epoch, None
    for _epoch in range(cfg.ppo_epochs):
        order = torch.randperm(n_prompts, generator=order_gen).tolist()
        for m in range(cfg.minibatches_per_epoch):
            mb = _pack(rollouts, order[m * per_mb : (m + 1) * per_mb], cfg.prompts_per_micro_batch,
                       cfg.samples_per_prompt)
            tokens = float(sum(b.targets.numel() for b in mb))  # the minibatch's tokens: one fixed denominator
            for k, b in enumerate(mb):
                b = b.to(rt.device)
                sel, w = b.index, b.max_length
                old_lp, msk = t["old_lp"][sel, :w], t["mask"][sel, :w]
                sync = rt.accelerator.no_sync(module) if k < len(mb) - 1 else torch.enable_grad()
                with sync, rt.autocast():
                    lp, v = module(b.input_ids, b.position_ids, b.attention_mask, b.pred_index, b.targets)
                    lp, v = to_grid(lp.float(), b), to_grid(v, b)  # (S, w)
                    pg, clipped = clipped_policy_loss(torch.exp(lp - old_lp), t["adv"][sel, :w], clip_low=cfg.clip_policy)
                    vf, v_clipped = clipped_value_loss(v, t["old_v"][sel, :w], t["returns"][sel, :w], clip=cfg.clip_value)
                    loss = aggregate(pg + cfg.value_coef * vf, msk, "token", tokens=tokens, sequences=1.0)
                    rt.accelerator.backward(loss * rt.world_size)
                approx_kl = kl_penalty(lp.detach(), old_lp, "k3")  # how far this epoch moved from the rollout policy
                sums += torch.stack([(pg.detach() * msk).sum(), (vf.detach() * msk).sum(), (clipped * msk).sum(),
                                     (v_clipped * msk).sum(), (approx_kl * msk).sum(), msk.sum()])
            grad_norm = optimizer_step(rt, module, optimizer, scheduler, cfg.optim.max_grad_norm)
    return sums, grad_norm


def _step_metrics(result: Any, scores: Any, seq_kl: Any, kl: Any, beta: float, sums: Any, t: dict[str, Any],
                  stopped: Any, lengths: Any, grad_norm: Any, scheduler: Any) -> dict[str, float]:
    s, tok = sums.tolist(), max(sums[5].item(), 1.0)
    mask = t["mask"]
    parts = {f"reward/{k}": sum(v) / len(v) for k, v in result.parts.items() if len(result.parts) > 1}
    return {
        "reward": float(sum(result.scores) / len(result.scores)), "score": scores.mean().item(), **parts,
        "non_score_reward": (-beta * kl.sum(1)).mean().item(), "kl": seq_kl.mean().item(), "kl_coef": beta,
        "policy_loss": s[0] / tok, "value_loss": s[1] / tok, "clip_fraction": s[2] / tok,
        "value_clip_fraction": s[3] / tok, "approx_kl": s[4] / tok,
        "returns": (t["returns"] * mask).sum().item() / mask.sum().item(),
        "values": (t["old_v"] * mask).sum().item() / mask.sum().item(),
        "completion_tokens": lengths.float().mean().item(), "truncated": 1.0 - stopped.float().mean().item(),
        "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"), "lr": scheduler.get_last_lr()[0],
    }


# ----------------------------------------------------------------------------------------- training


def train(cfg: PPOConfig) -> dict[str, Any]:
    """Run PPO as configured; returns the summary also written to `output_dir/summary.json`."""
    import torch
    from tqdm.auto import tqdm

    from alignkit.config import save_config, to_dict
    from alignkit.generate.base import SamplingParams
    from alignkit.losses.policy import adaptive_kl_coef, kl_penalty
    from alignkit.models.load import load_model
    from alignkit.rewards.spec import build_one, build_reward
    from alignkit.train.loop import (MetricsSink, make_optimizer, make_runtime, make_scheduler, planned_steps,
                                     seed_everything, step_batches)
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

    module = actor_critic(policy, _value_network(cfg), cfg.logprob_chunk_tokens).to(rt.device)
    updates_per_step = cfg.ppo_epochs * cfg.minibatches_per_epoch
    optimizer = make_optimizer(module, cfg.optim)
    scheduler = make_scheduler(optimizer, total_steps * updates_per_step, cfg.optim)
    module, optimizer = rt.accelerator.prepare(module, optimizer)
    raw = rt.accelerator.unwrap_model(module)
    sampler = make_sampler(cfg.rollout.backend, raw.model, tokenizer, cfg.rollout.batch_size,
                           sampling_dtype(cfg.rollout.dtype, rt.autocast))
    reference = reference_scorer(raw.model, cfg.logprob_chunk_tokens)
    monitor = RewardHackingMonitor(cfg.monitor)
    start_step, summary, beta = 0, {"before": {}, "samples_before": []}, cfg.kl_coef
    if resume_from is not None:
        state = ckpt.load(resume_from, raw, optimizer, scheduler)
        start_step, summary, beta = state["step"], state["summary"], state["kl_coef"]
        monitor.load_state_dict(state["monitor"])
        log.info("resumed from %s (step %d of %d)", resume_from, start_step, total_steps)
    elif rt.is_main:
        summary["before"] = evaluate_policy(sampler, tokenizer, eval_set, reward_fn, gold_fn, cfg.rollout)
        summary["samples_before"] = summary["before"].pop("samples", [])
        monitor.record_eval(0, summary["before"])

    sink = MetricsSink(out, cfg.run, to_dict(cfg), enabled=rt.is_main, start_step=start_step)
    bar = tqdm(total=total_steps, initial=start_step, desc="ppo", disable=not (cfg.run.progress and rt.is_main))
    batches = step_batches(len(train_set), cfg.prompts_per_step, cfg.run.seed, start_step)
    t_loop, stop_reason, gen_tokens_total, done = time.perf_counter(), None, 0, start_step
    for step in range(start_step, total_steps):
        t0 = time.perf_counter()
        idx = next(batches)[rt.rank :: rt.world_size]
        # 1. rollouts, seeded by (seed, step) so a resumed run samples the same completions
        params = SamplingParams(max_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                                top_p=cfg.rollout.top_p, n=cfg.samples_per_prompt, seed=cfg.run.seed * 1_000_003 + step)
        rollouts = collect_rollouts(sampler, tokenizer, [train_set.chats[i] for i in idx],
                                    [train_set.ids[i] for i in idx], params)
        for r in rollouts:
            r.prompt_index = idx[r.prompt_index]
        t_gen = time.perf_counter()
        # 2. scores, with the truncation penalty
        result = score_rollouts(reward_fn, train_set, rollouts)
        stopped = torch.tensor([r.stopped for r in rollouts])
        scores = torch.tensor(result.scores, dtype=torch.float32)
        if cfg.missing_eos_penalty is not None:
            scores = scores - cfg.missing_eos_penalty * (~stopped).float()
        t_reward = time.perf_counter()
        # 3. rollout policy log-probs and values, reference log-probs (no grad), on packed batches
        lengths = torch.tensor([len(r.ids) for r in rollouts], device=rt.device)
        old_lp, old_v, ref_lp = _scoring_pass(cfg, rt, module, reference, rollouts, len(idx), lengths)
        mask = (torch.arange(old_lp.shape[1], device=rt.device)[None, :] < lengths[:, None]).float()  # (R, T)
        # 4-5. KL-penalized per-token rewards -> GAE advantages and returns
        adv, returns, kl = _advantages(cfg, scores.to(rt.device), old_lp, ref_lp, old_v, mask, lengths, beta)
        # 6. PPO epochs over minibatches of prompt groups
        targets = {"old_lp": old_lp, "old_v": old_v, "adv": adv, "returns": returns, "mask": mask}
        sums, grad_norm = _ppo_epochs(cfg, rt, module, optimizer, scheduler, rollouts, len(idx), targets,
                                      seed=cfg.run.seed * 1_000_003 + step)
        done = step + 1
        t_end = time.perf_counter()
        # 7. KL controller, monitors, metrics
        seq_kl = (kl_penalty(old_lp, ref_lp, "k1") * mask).sum(1)  # (R,) KL(pi || ref) per response
        if cfg.adaptive_kl:
            beta = adaptive_kl_coef(beta, seq_kl.mean().item(), target=cfg.kl_target, horizon=cfg.kl_horizon,
                                    n_steps=len(rollouts) * rt.world_size)
        gen_tokens = int(lengths.sum().item())
        gen_tokens_total += gen_tokens
        gold = score_rollouts(gold_fn, train_set, rollouts).scores if gold_fn is not None else None
        monitor_kl = (kl_penalty(old_lp, ref_lp, "k3") * mask).sum(1)
        metrics = monitor.record(done, proxy=result.scores, kl=monitor_kl.tolist(), lengths=lengths.float().tolist(),
                                 gold=gold, disagreement=result.disagreement)
        metrics.update(_step_metrics(result, scores, seq_kl, kl, beta, sums, targets, stopped, lengths, grad_norm,
                                     scheduler))
        metrics.update({"rollout_s": t_gen - t0, "reward_s": t_reward - t_gen, "train_s": t_end - t_reward,
                        "tokens_per_s": gen_tokens * rt.world_size / max(t_end - t0, 1e-9)})
        if done % cfg.run.log_every_steps == 0 or done == total_steps:
            sink.log(done, metrics)
        bar.set_postfix(reward=f"{metrics['reward']:.3f}", kl=f"{metrics['kl']:.2f}")
        eval_during_run("ppo", cfg, rt, done, sampler, tokenizer, eval_set, reward_fn, gold_fn, monitor, sink)
        stop_reason = monitor.should_stop()
        if cfg.run.save_every_steps and done % cfg.run.save_every_steps == 0 and done < total_steps and rt.is_main:
            ckpt.save(done, raw, optimizer, scheduler, {"summary": summary, "monitor": monitor.state_dict(),
                                                        "kl_coef": beta})
        bar.update(1)
        if stop_reason:
            log.warning("early stop at step %d: %s", done, stop_reason)
            break
    bar.close()
    sink.close()
    summary["timing"] = {"loop_s": time.perf_counter() - t_loop, "steps_run": done - start_step,
                         "completion_tokens": gen_tokens_total}
    return finish_run("ppo", cfg, rt, raw.model, tokenizer, sampler, eval_set, reward_fn, gold_fn, monitor, summary,
                      stop_reason)

