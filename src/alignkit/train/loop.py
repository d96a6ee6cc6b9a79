"""Loop pieces the trainers share: devices, data order, optimizer and schedule, checkpoints, metrics.

Only scaffolding lives here; each trainer's loop stays visible in its own file.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import torch
from torch import Tensor, nn

from alignkit.errors import AlignkitError, ConfigError
from alignkit.fileio import atomic_write_text
from alignkit.losses.logprobs import token_logprobs
from alignkit.models import fused
from alignkit.models.load import decoder_and_head
from alignkit.train.settings import OptimSettings, RunSettings

__all__ = [
    "TokenLogprobs", "Runtime", "make_runtime", "lr_at", "make_optimizer", "optimizer_step", "make_scheduler",
    "planned_steps", "step_batches", "Checkpointer", "MetricsSink", "Throughput", "sum_by_owner", "atomic_write_text",
    "atomic_write_bytes", "seed_everything", "tune_cpu_malloc",
]


class TokenLogprobs(nn.Module):
    """Causal LM -> log-probs of chosen target tokens, computing the LM head only where scored.

    A module (not a function) so DDP/accelerate see a normal forward and synchronize gradients.
    `per_segment_attention` is true when the model runs alignkit's CPU attention: a single packed row then needs no
    padding and its attention runs span by span (`segments`), so trainers pack one unpadded row per micro-batch.
    """

    def __init__(self, model: nn.Module, chunk_tokens: int = 1024) -> None:
        from alignkit.models.attention import uses_fast_cpu_attention

        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens
        self.per_segment_attention = uses_fast_cpu_attention(model)
        fused.install(model)  # fused RMSNorm and q/k/v on CPU, active inside this forward only
        self.fused_ops = fused.installed(model)  # (also when another TokenLogprobs installed them: same arithmetic)

    def forward(self, input_ids: Tensor, position_ids: Tensor, attention_mask: Tensor, pred_index: Tensor,
                targets: Tensor, segments: tuple[tuple[int, int], ...] | None = None) -> Tensor:
        from alignkit.models.attention import SEGMENT_MASKS_KWARG, SEGMENTS_KWARG

        decoder, head = decoder_and_head(self.model)
        extra: dict[str, Any] = {}
        if segments is not None and self.per_segment_attention:
            extra[SEGMENTS_KWARG] = segments
            if attention_mask.dtype == torch.bool:  # each span's additive mask once, not a conversion per layer
                extra[SEGMENT_MASKS_KWARG] = tuple(
                    torch.zeros((1, 1, b - a, b - a), device=attention_mask.device).masked_fill_(
                        ~attention_mask[:1, :, a:b, a:b], float("-inf")) for a, b in segments)
        embed = self.model.get_input_embeddings()
        # A tied input embedding's gradient is then a sparse tensor (the rows this batch touched) that autograd adds
        # into the LM head's dense one, instead of a zero-filled vocabulary-sized tensor per micro-batch (113 MB for
        # SmolLM2; backward 0.88 -> 0.85 s on the project's CPU). Only when the head has rows, so the sum is dense.
        sparse_grad = (isinstance(embed, nn.Embedding) and embed.weight is head.weight and embed.weight.requires_grad
                       and torch.is_grad_enabled() and input_ids.device.type == "cpu" and pred_index.numel() > 0
                       and not embed.sparse)
        if sparse_grad:
            embed.sparse = True
        try:
            # not under gradient checkpointing: its recomputation runs outside this forward and must save the same
            # tensors as the original pass
            use_fused = self.fused_ops and not _checkpointing(self.model)
            with fused.active() if use_fused else nullcontext():
                hidden = decoder(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                                 use_cache=False, **extra).last_hidden_state  # (R, T, D)
        finally:
            if sparse_grad:
                embed.sparse = False
        picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, pred_index)  # (N, D); indices are flattened
        return token_logprobs(picked, head.weight, targets, chunk_size=self.chunk_tokens, bias=head.bias)


def _checkpointing(model: nn.Module) -> bool:
    """Whether gradient (activation) checkpointing is on; transformers 5 renamed the property."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        try:
            return bool(getattr(model, name))
        except AttributeError:
            continue
    return False


def sum_by_owner(values: Tensor, owner: Tensor, groups: int) -> Tensor:
    """(N,) per-token values summed into (groups,) buckets, e.g. per-reply sequence log-probs."""
    return torch.zeros(groups, dtype=values.dtype, device=values.device).index_add_(0, owner, values)


@dataclass
class Runtime:
    """Where and how the loop runs (single process or under `accelerate launch`)."""

    accelerator: Any
    device: torch.device
    autocast: Callable[[], ContextManager[Any]]
    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def cpu_has_fast_bf16() -> bool:
    """AMX tiles: bf16 matmuls run ~8x faster than fp32 (measured on this project's Xeon), so auto picks bf16."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def cpu_supports_bf16() -> bool:
    """bf16 autocast on CPU is correct anywhere but only fast with native bf16 instructions."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return cpu_has_fast_bf16() or bool(probe and probe())


def make_runtime(run: RunSettings, device: str = "auto") -> Runtime:
    from accelerate import Accelerator

    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if run.precision == "auto":
        bf16 = cpu_has_fast_bf16() if cpu else torch.cuda.is_bf16_supported()
    else:
        bf16 = run.precision == "bf16"
    if bf16 and cpu and not cpu_supports_bf16():
        raise ConfigError("run.precision=bf16 needs a CPU with AVX512-BF16 or AMX (or a GPU); use fp32 here")
    # Autocast is ours (rt.autocast around each forward), not accelerate's: accelerate's mixed-precision setting is a
    # process-wide singleton, so two runs with different precisions in one process (tests, `alignkit run`) would clash.
    acc = Accelerator(cpu=cpu, mixed_precision="no")
    if acc.device.type == "cpu" and run.cpu_malloc_tuning:
        tune_cpu_malloc()
    dtype = torch.bfloat16
    autocast = (lambda: torch.autocast(acc.device.type, dtype=dtype)) if bf16 else nullcontext
    return Runtime(acc, acc.device, autocast, acc.process_index, acc.num_processes)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_cpu_malloc(mmap_threshold: int = 256 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Serve allocations below `mmap_threshold` bytes from glibc's heap and keep up to `trim_threshold` bytes of freed
    heap instead of returning it to the kernel. Process-wide; returns False where the C library is not glibc.

    PyTorch's CPU allocator is plain malloc. glibc hands every block over its mmap threshold (which adapts up to
    32 MB) a fresh mapping, and the kernel zero-fills each page on first touch: a training step allocates and frees
    blocks of that size dozens of times (LM-head logit chunks, weight casts and gradients), so on this project's 2-core
    CPU a DPO step of SmolLM2-135M spent ~0.3 s of system time on page faults. With these settings: system time
    2.0 -> 0.2 s over 7 steps, steps 13.2 -> 11.6 s, reference pass 4.2 -> 3.4 s (medians of 3 alternating processes),
    peak resident memory +200 MB (3.65 -> 3.88 GB).
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(mmap_threshold))
                    and libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(trim_threshold)))
    except (OSError, AttributeError):
        return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def lr_at(step: int, total: int, optim: OptimSettings) -> float:
    """Learning-rate multiplier after `step` optimizer steps: linear warmup, then cosine/linear/constant."""
    warmup = int(round(optim.warmup_ratio * total))
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if optim.schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if optim.schedule == "cosine" else 1.0 - progress
    return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * shape


def make_optimizer(model: nn.Module, optim: OptimSettings) -> torch.optim.Optimizer:
    """AdamW over trainable parameters; no weight decay on biases and norm weights (1-D tensors)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise AlignkitError("the model has no trainable parameters")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Fused AdamW (one kernel over all tensors) exists for CUDA and, since torch 2.4, CPU; measured here it makes
    # the step of a 135M-parameter full fine-tune several times cheaper than the foreach implementation.
    fused = all(p.device.type in ("cuda", "cpu") and p.dtype in (torch.float32, torch.bfloat16) for p in params)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=optim.lr, betas=tuple(optim.betas),
                             eps=optim.eps, fused=fused or None, foreach=None if fused else True)


def optimizer_step(rt: Runtime, module: nn.Module, optimizer: Any, scheduler: Any, max_grad_norm: float | None) -> Tensor | None:
    """Clip the gradients to `max_grad_norm` (0/None: no clipping), step the optimizer and the schedule, clear the
    gradients. Returns the gradient norm before clipping (a device tensor, not synced), or None without clipping.

    With one process and fused AdamW the clip is folded into the optimizer kernel: it divides each gradient by
    `grad_scale` as it reads it (the hook `GradScaler` uses to unscale), so the separate multiply over every gradient
    (a read and a write of 4 bytes per parameter; ~30 ms a step for 135M parameters on the project's CPU) is skipped.
    grad / ((norm + 1e-6) / max) equals torch's grad * (max / (norm + 1e-6)) up to rounding.
    """
    from accelerate.utils import DistributedType

    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch optimizer
    fold = (bool(max_grad_norm) and rt.world_size == 1 and bool(inner.defaults.get("fused"))
            and rt.accelerator.distributed_type == DistributedType.NO and getattr(inner, "grad_scale", None) is None)
    grad_norm = None
    if fold:
        grads = [p.grad for group in inner.param_groups for p in group["params"] if p.grad is not None]
        grad_norm = _total_norm(grads)
        inner.grad_scale = torch.clamp((grad_norm.float() + 1e-6) / max_grad_norm, min=1.0)
        try:
            optimizer.step()
        finally:
            del inner.grad_scale
    else:
        if max_grad_norm:
            grad_norm = rt.accelerator.clip_grad_norm_(module.parameters(), max_grad_norm)
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def _total_norm(grads: list[Tensor]) -> Tensor:
    """L2 norm over all gradients. For fp32 CPU tensors one BLAS dot product each, summed in fp64: on the project's
    CPU 26 ms for SmolLM2-135M's 272 gradients vs 51 ms for torch's norm, and closer to an fp64 reference (relative
    error 5e-6 vs 3e-4 on random gradients)."""
    if not grads:
        return torch.zeros(())
    if all(g.device.type == "cpu" and g.dtype == torch.float32 for g in grads):
        flat = [g.reshape(-1) for g in grads]
        return torch.stack([torch.dot(f, f) for f in flat]).double().sum().sqrt().float()
    return torch.nn.utils.get_total_norm(grads)


def make_scheduler(optimizer: torch.optim.Optimizer, total: int, optim: OptimSettings) -> Any:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, total, optim))


def planned_steps(num_items: int, items_per_step: int, run: RunSettings) -> int:
    """Optimizer steps for the run: full steps per epoch x epochs, or max_steps."""
    per_epoch = num_items // items_per_step
    if per_epoch == 0:
        raise ConfigError(f"the data has {num_items} usable records, fewer than one step of {items_per_step}")
    if run.max_steps is not None:
        return run.max_steps
    return max(1, int(per_epoch * run.epochs))


def step_batches(num_items: int, items_per_step: int, seed: int, start_step: int) -> Iterator[list[int]]:
    """Record indices for each optimizer step from `start_step` on; epochs reshuffle with seed + epoch.

    The order is a pure function of (seed, step), which is what makes resume exact.
    """
    per_epoch = num_items // items_per_step  # the incomplete tail of each epoch is dropped
    step = start_step
    while True:
        epoch, within = divmod(step, per_epoch)
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(num_items, generator=gen).tolist()
        for k in range(within, per_epoch):
            yield order[k * items_per_step : (k + 1) * items_per_step]
            step += 1


class Checkpointer:
    """`output_dir/checkpoints/step-NNNNNN/`: trainable weights, optimizer, scheduler, RNG, data position.

    Each checkpoint is written to a temporary directory and renamed, so a crash never leaves a partial one.
    """

    def __init__(self, output_dir: Path, keep: int) -> None:
        self.root = output_dir / "checkpoints"
        self.keep = keep

    def latest(self) -> Path | None:
        done = sorted(p for p in self.root.glob("step-*") if (p / "state.pt").is_file()) if self.root.is_dir() else []
        return done[-1] if done else None

    def save(self, step: int, model: nn.Module, optimizer: Any, scheduler: Any, extra: dict[str, Any]) -> Path:
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / f"step-{step:06d}"
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=self.root))
        weights = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(weights, str(tmp / "trainable.safetensors"))
        state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                         "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                 **extra}
        torch.save(state, tmp / "state.pt")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        for old in sorted(p for p in self.root.glob("step-*") if p.is_dir())[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def load(self, path: Path, model: nn.Module, optimizer: Any, scheduler: Any) -> dict[str, Any]:
        from safetensors.torch import load_file

        weights = load_file(str(path / "trainable.safetensors"))
        params = dict(model.named_parameters())
        missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
        unknown = [n for n in weights if n not in params]
        if missing or unknown:
            raise AlignkitError(f"checkpoint {path} does not match the model (missing {missing[:3]}, unknown {unknown[:3]}); "
                                "was the config changed since it was written?")
        with torch.no_grad():
            for name, tensor in weights.items():
                params[name].copy_(tensor)
        state = torch.load(path / "state.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        return state


class MetricsSink:
    """metrics.jsonl in the run directory, plus TensorBoard / W&B when asked for."""

    def __init__(self, output_dir: Path, run: RunSettings, config: dict[str, Any], enabled: bool,
                 start_step: int = 0) -> None:
        self.path = output_dir / "metrics.jsonl"
        self.enabled = enabled
        self.tb = self.wandb = None
        if not enabled:
            return
        self._keep_until(start_step)
        if "tensorboard" in run.report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ConfigError("run.report_to has tensorboard but it is not installed: pip install tensorboard") from exc
            self.tb = SummaryWriter(str(output_dir / "tensorboard"))
        if "wandb" in run.report_to:
            try:
                import wandb
            except ImportError as exc:
                raise ConfigError("run.report_to has wandb but it is not installed: pip install wandb") from exc
            self.wandb = wandb.init(dir=str(output_dir), config=config)

    def _keep_until(self, step: int) -> None:
        """A fresh run starts an empty file; a resumed one drops rows logged after its checkpoint."""
        if not self.path.is_file():
            return
        rows = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step] if step else []
        atomic_write_text(self.path, "".join(line + "\n" for line in rows))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in metrics.items()}}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


class Throughput:
    """Tokens per second over the steps since the last read (wall clock)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.tokens = 0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def read(self) -> float:
        now = time.perf_counter()
        rate = self.tokens / max(now - self.t0, 1e-9)
        self.t0, self.tokens = now, 0
        return rate


def atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    """Call `write(fh)` on a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
