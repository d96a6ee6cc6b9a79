"""Reward model: a scalar head on a causal LM, trained with the Bradley-Terry loss on preference pairs.

Read top to bottom: config -> model -> data -> the loop -> held-out accuracy and margins -> final save.

    alignkit train rm --config recipes/rm-tiny.yaml
    alignkit train rm --config recipes/rm-truthfulqa.yaml heads=4        # a 4-head bootstrap ensemble

The model is a plain `AutoModelForSequenceClassification` (num_labels = heads, 1 by default) whose
decoder starts from the causal LM; LoRA adapters are merged before saving, so `final/` loads with
`AutoModelForSequenceClassification.from_pretrained` and the score is read at the last token.
It reads the same preference formats as DPO. Each pair is one packed segment [prompt | chosen | rejected]
(the prompt is computed once, rejected cannot see chosen, no padding), and the head runs only on the two
last tokens. With heads > 1 each head sees its own bootstrap resample of the pairs (Poisson(1) weights,
Osband et al. 2016), so their spread measures the reward model's uncertainty (`disagreement`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from alignkit.models.load import ModelConfig
from alignkit.train.settings import DataSettings, OptimSettings, RunSettings

__all__ = ["RMConfig", "train", "build_reward_model", "sequence_classifier", "pair_scores_module", "evaluate"]

log = logging.getLogger(__name__)


@dataclass
class RMConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataSettings = field(default_factory=DataSettings)
    optim: OptimSettings = field(default_factory=lambda: OptimSettings(lr=1e-5))
    run: RunSettings = field(default_factory=RunSettings)
    heads: int = field(default=1, metadata={"help": "scalar heads; > 1 trains a bootstrap ensemble whose spread is the disagreement"})
    use_margin: bool = field(default=True, metadata={"help": "use a record's `margin` (preference strength) inside the loss (Llama 2)"})
    center_coef: float = field(default=0.0, metadata={"help": "reward centering: adds coef * (r_chosen + r_rejected)^2 (e.g. 0.01)"})
    pairs_per_step: int = field(default=8, metadata={"help": "preference pairs per optimizer step (all processes)"})
    pairs_per_micro_batch: int = field(default=4, metadata={"help": "pairs per forward pass; accumulation = pairs_per_step / this / processes"})

    def validate(self) -> None:
        if self.heads < 1:
            raise ValueError("heads must be >= 1")
        if self.center_coef < 0:
            raise ValueError("center_coef must be >= 0")
        if self.pairs_per_micro_batch < 1 or self.pairs_per_step % self.pairs_per_micro_batch:
            raise ValueError(f"pairs_per_step ({self.pairs_per_step}) must be a multiple of pairs_per_micro_batch "
                             f"({self.pairs_per_micro_batch}) >= 1")


# ---------------------------------------------------------------------------------------------- model


def build_reward_model(cfg: RMConfig) -> tuple[Any, Any]:
    """(sequence-classification model, tokenizer): the causal LM's decoder plus a fresh scalar head."""
    return sequence_classifier(cfg.model, cfg.heads, cfg.run.seed)


def sequence_classifier(model_cfg: ModelConfig, heads: int, seed: int) -> tuple[Any, Any]:
    """A causal LM turned into `AutoModelForSequenceClassification` (num_labels = heads), LoRA if configured.

    Also the value network of PPO (`value: model`). The head is initialized N(0, 1/(d+1)) as in Stiennon
    et al. (2020), so initial scores are small.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    from alignkit.models.load import load_model

    loaded = load_model(replace(model_cfg, lora=None, gradient_checkpointing=False))
    causal, tok = loaded.model, loaded.tokenizer
    config = causal.config
    config.num_labels, config.pad_token_id = heads, tok.pad_token_id
    model = AutoModelForSequenceClassification.from_config(config, dtype=causal.dtype)
    getattr(model, model.base_model_prefix).load_state_dict(getattr(causal, causal.base_model_prefix).state_dict())
    device = next(causal.parameters()).device
    del causal, loaded
    head = model.score if hasattr(model, "score") else model.classifier
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        head.weight.normal_(0.0, 1.0 / (head.weight.shape[1] + 1) ** 0.5)
        if getattr(head, "bias", None) is not None:
            head.bias.zero_()
    model.to(device)
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if model_cfg.lora is not None:
        from peft import LoraConfig, get_peft_model

        if model_cfg.gradient_checkpointing:
            model.enable_input_require_grads()
        lora = model_cfg.lora
        # SEQ_CLS keeps the head fully trainable (modules_to_save) next to the adapters
        model = get_peft_model(model, LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=list(lora.target_modules), task_type="SEQ_CLS"))
    return model, tok


def pair_scores_module(model: Any) -> Any:
    """An nn.Module: packed pairs -> (2B, heads) scores at the last token of each chosen / rejected reply.

    A module (not a function) so DDP/accelerate see a normal forward; defined inside a function so that
    importing this file imports no torch.
    """
    import torch

    from alignkit.models.load import unwrap

    class PairScores(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, position_ids: Any, attention_mask: Any, last_index: Any) -> Any:
            base = unwrap(self.model)
            decoder = getattr(base, base.base_model_prefix)
            hidden = decoder(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                             use_cache=False).last_hidden_state  # (R, T, D)
            head = base.score if hasattr(base, "score") else base.classifier
            flat = hidden.reshape(-1, hidden.shape[-1])  # last_index counts flattened positions
            return head(flat.index_select(0, last_index)).float()  # (2B, heads)

    return PairScores(model)


def _last_index(batch: Any) -> Any:
    """(2B,) row position of the last token of each reply (owner 2i = chosen of pair i, 2i+1 = rejected)."""
    import torch

    token_at = batch.pred_index + 1  # the target token of each scored position
    out = torch.zeros(2 * batch.num_pairs, dtype=torch.long, device=token_at.device)
    return out.scatter_reduce(0, batch.owner, token_at, reduce="amax", include_self=False)


def _scores(module: Any, batch: Any) -> tuple[Any, Any]:
    """(B, heads) chosen and rejected scores for a packed pair batch."""
    s = module(batch.input_ids, batch.position_ids, batch.attention_mask, _last_index(batch))
    s = s.view(batch.num_pairs, 2, -1)
    return s[:, 0], s[:, 1]


# ----------------------------------------------------------------------------------------------- data


def _load_pairs(cfg: RMConfig, tokenizer: Any) -> tuple[list[Any], list[Any]]:
    from alignkit.train.dpo import _load_pairs as load_pairs  # same formats, same tokenization as DPO

    return load_pairs(cfg, tokenizer)  # type: ignore[arg-type]


def _micro_batches(pairs: list[Any], indices: list[int], size: int) -> list[Any]:
    from alignkit.data.batch import pack_pairs

    return [pack_pairs([pairs[i] for i in indices[s : s + size]], indices[s : s + size])
            for s in range(0, len(indices), size)]


def _bootstrap_weights(n: int, heads: int, seed: int) -> Any:
    """(n, heads) per-pair weights: 1 for a single head, else Poisson(1) resampling per head (fixed per run)."""
    import torch

    if heads == 1:
        return torch.ones(n, 1)
    gen = torch.Generator().manual_seed(seed * 7919 + 17)
    return torch.poisson(torch.ones(n, heads), generator=gen)


# ------------------------------------------------------------------------------------------ evaluation


def evaluate(cfg: RMConfig, rt: Any, module: Any, pairs: list[Any]) -> dict[str, Any]:
    """Held-out preference accuracy, the margin distribution, and (heads > 1) ensemble disagreement."""
    import torch

    from alignkit.losses.reward import ensemble_disagreement

    if not pairs:
        return {}
    was_training = module.training
    module.eval()
    chosen, rejected = [], []
    with torch.no_grad(), rt.autocast():  # not inference_mode: autocast caches weight casts only outside it
        for batch in _micro_batches(pairs, list(range(len(pairs))), cfg.pairs_per_micro_batch):
            c, r = _scores(module, batch.to(rt.device))
            chosen.append(c.float().cpu())
            rejected.append(r.float().cpu())
    module.train(was_training)
    c, r = torch.cat(chosen), torch.cat(rejected)  # (n, heads)
    margin = c.mean(1) - r.mean(1)
    q = torch.quantile(margin, torch.tensor([0.1, 0.5, 0.9])).tolist()
    out: dict[str, Any] = {
        "accuracy": (margin > 0).float().mean().item(), "margin_mean": margin.mean().item(),
        "margin_std": margin.std().item() if len(margin) > 1 else 0.0, "margin_p10": q[0], "margin_p50": q[1],
        "margin_p90": q[2], "reward_chosen": c.mean().item(), "reward_rejected": r.mean().item(), "pairs": len(pairs),
        "margins": [round(m, 5) for m in margin.tolist()],
    }
    if cfg.heads > 1:
        out["disagreement"] = torch.cat([ensemble_disagreement(c.T), ensemble_disagreement(r.T)]).mean().item()
        out["head_accuracy"] = [((c[:, h] - r[:, h]) > 0).float().mean().item() for h in range(cfg.heads)]
    return out


def _plot_margins(path: Path, before: dict[str, Any], after: dict[str, Any]) -> None:
    """Histogram of held-out reward margins (r_chosen - r_rejected) before and after training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alignkit.train.loop import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, res in (("before", before), ("after", after)):
        if res.get("margins"):
            ax.hist(res["margins"], bins=30, alpha=0.6, label=f"{name}: acc {res['accuracy']:.2f}")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("r(chosen) - r(rejected) on held-out pairs")
    ax.set_ylabel("pairs")
    ax.legend()
    fig.tight_layout()
    atomic_write_bytes(path, lambda fh: fig.savefig(fh, format="png", dpi=80))
    plt.close(fig)


# -------------------------------------------------------------------------------------------- training


def train(cfg: RMConfig) -> dict[str, Any]:
    """Train the reward model as configured; returns the summary also written to `output_dir/summary.json`."""
    import torch
    from tqdm.auto import tqdm

    from alignkit.config import save_config, to_dict
    from alignkit.errors import AlignkitError
    from alignkit.losses.reward import bradley_terry_loss
    from alignkit.train.loop import (Checkpointer, MetricsSink, Throughput, atomic_write_text, make_optimizer,
                                     make_runtime, make_scheduler, optimizer_step, planned_steps, seed_everything,
                                     step_batches)

    rt = make_runtime(cfg.run, cfg.model.device)
    seed_everything(cfg.run.seed)
    out = Path(cfg.run.output_dir)
    ckpt = Checkpointer(out, cfg.run.keep_checkpoints)
    resume_from = ckpt.latest() if cfg.run.resume != "never" else None
    if cfg.run.resume == "must" and resume_from is None:
        raise AlignkitError(f"run.resume=must but {out / 'checkpoints'} holds no checkpoint")
    if cfg.run.resume == "never" and (out / "checkpoints").is_dir():
        raise AlignkitError(f"{out} already holds a run; choose another run.output_dir or set run.resume=auto")

    model, tokenizer = build_reward_model(cfg)
    train_pairs, eval_pairs = _load_pairs(cfg, tokenizer)  # bad data stops here, before any output
    total_steps = planned_steps(len(train_pairs), cfg.pairs_per_step, cfg.run)
    if rt.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    weights = _bootstrap_weights(len(train_pairs), cfg.heads, cfg.run.seed)  # (n, heads)

    module = pair_scores_module(model).to(rt.device)
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
        summary["before"] = evaluate(cfg, rt, raw, eval_pairs)

    sink = MetricsSink(out, cfg.run, to_dict(cfg), enabled=rt.is_main, start_step=start_step)
    if cfg.pairs_per_step % (cfg.pairs_per_micro_batch * rt.world_size):
        raise AlignkitError(f"pairs_per_step={cfg.pairs_per_step} does not split into {rt.world_size} processes x "
                            f"micro-batches of {cfg.pairs_per_micro_batch}")
    meter, sums = Throughput(), torch.zeros(6, device=rt.device)  # loss, acc, margin, r_chosen, r_rejected, pairs
    bar = tqdm(total=total_steps, initial=start_step, desc="rm", disable=not (cfg.run.progress and rt.is_main))
    batches = step_batches(len(train_pairs), cfg.pairs_per_step, cfg.run.seed, start_step)
    module.train()
    t_loop = time.perf_counter()
    for step in range(start_step, total_steps):
        indices = next(batches)[rt.rank :: rt.world_size]
        micro = _micro_batches(train_pairs, indices, cfg.pairs_per_micro_batch)
        for k, batch in enumerate(micro):
            batch = batch.to(rt.device)
            sync = rt.accelerator.no_sync(module) if k < len(micro) - 1 else torch.enable_grad()
            with sync, rt.autocast():
                chosen, rejected = _scores(module, batch)  # (B, heads)
                margin = batch.margin[:, None] if (cfg.use_margin and batch.margin is not None) else None
                res = bradley_terry_loss(chosen, rejected, margin=margin, center_coef=cfg.center_coef)
                w = weights[batch.index.cpu()].to(rt.device)  # (B, heads) bootstrap weights
                # a fixed denominator for the whole step (pairs x heads), so accumulation never changes the update
                loss = (res.loss * w).sum() / (cfg.pairs_per_step * cfg.heads)
                rt.accelerator.backward(loss * rt.world_size)
            m = (chosen.mean(1) - rejected.mean(1)).detach()
            sums += torch.stack([(res.loss.detach() * w).sum() / cfg.heads, (m > 0).float().sum(), m.sum(),
                                 chosen.detach().mean(1).sum(), rejected.detach().mean(1).sum(),
                                 torch.tensor(float(batch.num_pairs), device=rt.device)])
            meter.add(batch.input_ids.numel() * rt.world_size)
        grad_norm = optimizer_step(rt, module, optimizer, scheduler, cfg.optim.max_grad_norm)
        done = step + 1
        if done % cfg.run.log_every_steps == 0 or done == total_steps:
            total = rt.accelerator.reduce(sums.clone(), reduction="sum").tolist()
            sums.zero_()
            n = max(total[5], 1.0)
            metrics = {"loss": total[0] / n, "accuracy": total[1] / n, "margin": total[2] / n,
                       "reward_chosen": total[3] / n, "reward_rejected": total[4] / n,
                       "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                       "lr": scheduler.get_last_lr()[0], "tokens_per_s": meter.read()}
            sink.log(done, metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['accuracy']:.2f}")
        if cfg.run.eval_every_steps and done % cfg.run.eval_every_steps == 0 and rt.is_main and eval_pairs:
            res_eval = evaluate(cfg, rt, raw, eval_pairs)
            sink.log(done, {f"eval/{k}": v for k, v in res_eval.items() if isinstance(v, float)})
        if cfg.run.save_every_steps and done % cfg.run.save_every_steps == 0 and done < total_steps and rt.is_main:
            ckpt.save(done, raw.model, optimizer, scheduler, {"summary": summary})
        bar.update(1)
    bar.close()
    sink.close()
    summary["timing"] = {"loop_s": time.perf_counter() - t_loop, "steps_run": total_steps - start_step}
    rt.accelerator.wait_for_everyone()
    if not rt.is_main:
        return summary
    summary["after"] = evaluate(cfg, rt, raw, eval_pairs)
    summary["steps"] = total_steps
    if eval_pairs:
        _plot_margins(out / "margins.png", summary["before"], summary["after"])
    summary["final_model"] = str(_save(raw.model, tokenizer, out / "final"))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def _save(model: Any, tokenizer: Any, target: Path) -> Path:
    """Merge LoRA adapters (if any) and save a plain sequence-classification model + tokenizer."""
    from alignkit.train.save import save_final

    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.config.pad_token_id = tokenizer.pad_token_id
    return save_final(model, tokenizer, target)
