#!/usr/bin/env python
"""alignkit DPO vs TRL `DPOTrainer` (trl 1.16.0): same model, data, batch, lengths, precision and steps.

    python benchmarks/dpo_vs_trl.py                      # the CPU comparison (SmolLM2-135M-Instruct, bf16 autocast)
    python benchmarks/dpo_vs_trl.py --precision fp32     # both sides in plain fp32
    python benchmarks/dpo_vs_trl.py --variants all       # also alignkit with gradient checkpointing (matched)
    python benchmarks/dpo_vs_trl.py --device cuda        # 1B Llama-shaped random model, bf16, MFU

Each variant runs in its own subprocess (`--worker VARIANT`), one after the other, so that peak memory is
that variant's alone. The last line printed is one JSON object (see benchmarks/README.md for every field).

How time is counted (the same for both sides):
- every run does `steps + 1` optimizer steps over exactly `(steps + 1) * pairs_per_step` pairs (one epoch);
  step 1 is warmup and is left out of the measured figures;
- a step's time is the wall clock between the end of the previous step and the end of this one
  (alignkit: its own per-step throughput meter, read after each optimizer step with log_every_steps=1;
  TRL: a TrainerCallback's on_step_end). Measured time = end of the last step - end of step 1;
- tokens are logical tokens, per pair len(prompt)+len(chosen) + len(prompt)+len(rejected), no padding
  (alignkit's `loop_tokens`; for TRL the attention-mask sum of each collated batch, which is the same
  quantity: its rows are prompt+chosen and prompt+rejected, padding masked out). Both totals are printed;
- alignkit precomputes the reference log-probs once before its loop (TRL's default recomputes them every
  step with a frozen copy). That time is charged to alignkit: `tokens_per_s` adds the reference pass's
  share for the measured pairs (reference_s x measured tokens / tokens the pass covered; step 1's pairs take
  their reference from the policy's first forward, so the pass covers exactly the measured steps and all of
  it is charged); `whole_run_tokens_per_s`
  is loop_tokens / (loop_s + reference_s) over all steps including warmup; `loop_tokens_per_s` leaves
  the reference pass out (loop only).
Peak memory: a thread samples VmRSS from /proc/self/status every 20 ms from just before the model is
loaded to the end of the last training step (`peak_rss_mb`); `ru_maxrss_mb` is the whole process's peak
(imports, loading, and for alignkit its final save too). On CUDA also torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _table import print_rows

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "src" / "alignkit" / "resources" / "quickstart_train.jsonl"
VARIANTS = ("alignkit", "alignkit_ckpt", "trl", "trl_no_ckpt")
DEFAULT_VARIANTS = ("alignkit", "trl", "trl_no_ckpt")
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0, "L40S": 362.0,
               "A10G": 125.0, "L4": 121.0, "RTX 4090": 165.0}  # dense bf16 tensor-core peaks


# ------------------------------------------------------------------------------------------ helpers


class MemSampler(threading.Thread):
    """Samples this process's resident set size (VmRSS) every `interval` seconds; marks name moments."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (perf_counter, kB)
        self.marks: dict[str, float] = {}
        self._halt = threading.Event()

    @staticmethod
    def rss_kb() -> int:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.perf_counter(), self.rss_kb()))
            self._halt.wait(self.interval)

    def mark(self, name: str) -> float:
        now = time.perf_counter()
        self.samples.append((now, self.rss_kb()))
        self.marks[name] = now
        return now

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.samples.append((time.perf_counter(), self.rss_kb()))

    def peak_mb(self, start: float, end: float) -> float:
        vals = [kb for t, kb in self.samples if start <= t <= end]
        return round(max(vals) / 1024, 1) if vals else float("nan")


def ru_maxrss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: kB


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_jiffies() -> int:
    """CPU jiffies all processes on the machine spent busy (not idle/iowait), from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            vals = [int(x) for x in fh.readline().split()[1:9]]
        return sum(vals) - vals[3] - vals[4]
    except OSError:
        return 0


def own_jiffies() -> int:
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime
    except OSError:
        return 0


def snapshot() -> tuple[float, float, int, int]:
    """(wall clock, this process's CPU seconds, machine busy jiffies, this process's jiffies)."""
    return time.perf_counter(), time.process_time(), machine_busy_jiffies(), own_jiffies()


def other_load(a: tuple[float, float, int, int], b: tuple[float, float, int, int]) -> float:
    """Average number of cores other processes kept busy between two snapshots (contention)."""
    wall = b[0] - a[0]
    if wall <= 0:
        return float("nan")
    return max(0.0, ((b[2] - a[2]) - (b[3] - a[3])) / CLK_TCK / wall)


def wait_for_idle(max_wait: float, threshold: float) -> float:
    """Wait (up to `max_wait` s) until other processes use fewer than `threshold` cores; return that load."""
    deadline = time.perf_counter() + max_wait
    while True:
        a = snapshot()
        time.sleep(2.0)
        load = other_load(a, snapshot())
        if load < threshold or time.perf_counter() >= deadline:
            return round(load, 2)


def machine_info(device: str) -> dict[str, Any]:
    import torch

    cpu, isa = "", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not isa:
                flags = set(line.split(":", 1)[1].split())
                isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    except OSError:
        cpu = platform.processor()
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass

    def version(pkg: str) -> str | None:
        try:
            from importlib.metadata import version as v

            return v(pkg)
        except Exception:
            return None

    info = {"cpu": cpu, "cpu_isa": isa, "cpu_cores": os.cpu_count(), "ram_gib": mem_gib, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform(),
            "torch": torch.__version__, "transformers": version("transformers"), "trl": version("trl"),
            "peft": version("peft"), "accelerate": version("accelerate"), "alignkit": version("alignkit")}
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 1024**3, 1)
        info["cuda"] = torch.version.cuda
    return info


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def rnd(x: Any, nd: int = 2) -> Any:
    return round(x, nd) if isinstance(x, float) else x


# --------------------------------------------------------------------------------------------- data


_WORDS = ("the model answers each question clearly and briefly with a short example that a careful reader "
          "can check against the facts given in the prompt while avoiding claims it cannot support").split()


def _text(tokenizer: Any, seed: int, n_tokens: int, base: str = "") -> str:
    """About `n_tokens` tokens of text: `base` repeated, or deterministic filler words."""
    import random

    rng = random.Random(seed)
    parts: list[str] = []
    while len(tokenizer(" ".join(parts), add_special_tokens=False)["input_ids"]) < n_tokens:
        parts.append(base if base else " ".join(rng.choice(_WORDS) for _ in range(12)) + ".")
    return " ".join(parts)


def synth_pairs(tokenizer: Any, n: int, prompt_tokens: int, reply_tokens: int,
                base: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """`n` conversational pairs; texts of the `base` records are repeated up to the target lengths."""
    out = []
    for i in range(n):
        src = base[i % len(base)] if base else None

        def content(key: str) -> str:
            return " ".join(m["content"] for m in src[key]) if src else ""

        out.append({
            "prompt": [{"role": "user", "content": _text(tokenizer, 3 * i, prompt_tokens, content("prompt"))}],
            "chosen": [{"role": "assistant", "content": _text(tokenizer, 3 * i + 1, reply_tokens, content("chosen"))}],
            "rejected": [{"role": "assistant", "content": _text(tokenizer, 3 * i + 2, reply_tokens, content("rejected"))}],
        })
    return out


def read_jsonl(path: Path, limit: int) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                # keep only the shared layout: an extra `margin` would switch alignkit to margin-DPO
                rows.append({k: row[k] for k in ("prompt", "chosen", "rejected") if k in row})
                if len(rows) == limit:
                    break
    return rows


# ------------------------------------------------------------------------------------------ workers


def _cuda_reset(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _cuda_peak(device: str) -> dict[str, float]:
    if device != "cuda":
        return {}
    import torch

    torch.cuda.synchronize()
    return {"cuda_max_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "cuda_max_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1)}


def _step_figures(snaps: list[tuple[float, float, int, int]], tokens: list[int], first_start: float) -> dict[str, Any]:
    """Per-step figures from end-of-step snapshots; step 1 (warmup) is timed from `first_start`."""
    ends = [x[0] for x in snaps]
    times = [ends[0] - first_start] + [b - a for a, b in zip(ends, ends[1:])]
    rates = [t / dt for t, dt in zip(tokens, times)]
    measured_tokens, measured_s = sum(tokens[1:]), ends[-1] - ends[0]
    cpu_s = snaps[-1][1] - snaps[0][1]
    return {"step_s": [round(t, 4) for t in times], "step_tokens": tokens,
            "warmup_step_s": round(times[0], 3), "measured_steps": len(tokens) - 1,
            "measured_tokens": measured_tokens, "measured_s": round(measured_s, 3),
            "all_tokens": sum(tokens), "median_step_tokens_per_s": round(median(rates[1:]), 2),
            "loop_tokens_per_s": round(measured_tokens / measured_s, 2) if measured_s > 0 else float("nan"),
            "measured_cpu_s": round(cpu_s, 2),
            "tokens_per_cpu_s": round(measured_tokens / cpu_s, 2) if cpu_s > 0 else float("nan"),
            "other_load_cores": round(other_load(snaps[0], snaps[-1]), 2)}


def worker_alignkit(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(spec["threads"])
    mem = MemSampler()
    mem.start()
    import alignkit.train.loop as loop
    from alignkit.config import from_dict
    from alignkit.train.dpo import DPOConfig, train

    # alignkit exposes no step hook: record its own per-step throughput meter (read once per log step).
    reads: list[tuple[tuple[float, float, int, int], int]] = []  # (end-of-step snapshot, tokens in the step)
    created: list[float] = []

    class RecordingThroughput(loop.Throughput):
        def __init__(self) -> None:
            super().__init__()
            created.append(self.t0)

        def read(self) -> float:
            tokens, snap = self.tokens, snapshot()
            rate = super().read()
            reads.append((snap, tokens))
            return rate

    loop.Throughput = RecordingThroughput
    # and time the reference pass in CPU seconds too (summary["timing"] has its wall clock only)
    import alignkit.train.dpo as dpo_module

    ref_snaps: list[tuple[Any, Any]] = []
    reference_logps = dpo_module._reference_logps

    def timed_reference_logps(*a: Any, **kw: Any) -> Any:
        before = snapshot()
        out = reference_logps(*a, **kw)
        ref_snaps.append((before, snapshot()))
        return out

    dpo_module._reference_logps = timed_reference_logps
    gpu = spec["device"] == "cuda"
    out_dir = tempfile.mkdtemp(prefix="alignkit-bench-")
    cfg = from_dict(DPOConfig, {
        "model": {"name": spec["alignkit_model"], "gradient_checkpointing": spec["variant"] == "alignkit_ckpt",
                  "dtype": "bfloat16" if gpu else "float32", "device": spec["device"]},
        "data": {"train": spec["data"], "max_tokens": spec["max_length"], "max_prompt_tokens": spec["max_prompt_length"]},
        "optim": {"lr": spec["lr"], "warmup_ratio": 0.0},
        "run": {"output_dir": out_dir, "max_steps": spec["total_steps"], "progress": False, "resume": "never",
                "log_every_steps": 1, "precision": "bf16" if gpu or spec["cpu_bf16"] else "fp32", "seed": spec["seed"]},
        "pairs_per_step": spec["pairs_per_step"], "pairs_per_micro_batch": spec["pairs_per_step"],
        "sample_prompts": 0, "beta": spec["beta"], "loss": "sigmoid",
    })
    _cuda_reset(spec["device"])
    t_start = mem.mark("start")  # before the model is loaded (train() loads it)
    try:
        summary = train(cfg)
        t_done = mem.mark("done")
        mem.stop()
        metrics = [json.loads(x) for x in (Path(out_dir) / "metrics.jsonl").read_text().splitlines() if x.strip()]
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    timing = summary["timing"]
    if len(reads) != spec["total_steps"]:
        raise RuntimeError(f"expected {spec['total_steps']} throughput reads from alignkit, got {len(reads)}; "
                           "has alignkit.train.loop.Throughput or log_every_steps changed?")
    snaps, tokens = [x for x, _ in reads], [n for _, n in reads]
    ends = [x[0] for x in snaps]
    res = _step_figures(snaps, tokens, created[0])
    # the reference pass's cost per token it covered, charged for the measured tokens; when step 1's pairs were
    # left out of it (their reference came from the policy's first forward), it covered exactly the measured steps
    ref_tokens = res["all_tokens"] - (res["step_tokens"][0] if timing.get("reference_skipped_first_step") else 0)
    per_ref_token = timing["reference_s"] / max(ref_tokens, 1)
    ref_share = per_ref_token * min(res["measured_tokens"], ref_tokens)
    ref_cpu_s = sum(b[1] - a[1] for a, b in ref_snaps)
    ref_cpu_share = ref_cpu_s / max(ref_tokens, 1) * min(res["measured_tokens"], ref_tokens)
    res.update({
        "variant": spec["variant"], "reference_s": round(timing["reference_s"], 3), "loop_s": round(timing["loop_s"], 3),
        "loop_tokens": timing["loop_tokens"], "steps_run": timing["steps_run"],
        "tokens_per_s": round(res["measured_tokens"] / (res["measured_s"] + ref_share), 2),
        "reference_cpu_s": round(ref_cpu_s, 2),
        "tokens_per_cpu_s_with_ref": round(res["measured_tokens"] / (res["measured_cpu_s"] + ref_cpu_share), 2),
        "whole_run_tokens_per_s": round(timing["loop_tokens"] / (timing["loop_s"] + timing["reference_s"]), 2),
        "median_step_tokens_per_s_with_ref": round(median(
            [n / (dt + per_ref_token * n)
             for n, dt in zip(res["step_tokens"][1:], res["step_s"][1:])]), 2),
        "peak_rss_mb": mem.peak_mb(t_start, ends[-1]),
        "peak_rss_incl_final_save_mb": mem.peak_mb(t_start, t_done),
        "rss_before_load_mb": round(mem.samples[0][1] / 1024, 1), "ru_maxrss_mb": ru_maxrss_mb(),
        "gradient_checkpointing": spec["variant"] == "alignkit_ckpt", "reference": "precomputed once" + (" (step 1's pairs: the policy's first forward)"
                                                            if timing.get("reference_skipped_first_step") else ""),
        "optimizer": "torch AdamW (fused)", "lr_scheduler": "cosine",
        "losses": [m["loss"] for m in metrics if "loss" in m],
        "logged_tokens_per_s": [m["tokens_per_s"] for m in metrics if "tokens_per_s" in m],
        **_cuda_peak(spec["device"]),
    })
    return res


def worker_trl(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(spec["threads"])
    mem = MemSampler()
    mem.start()
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    gpu = spec["device"] == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    rows = read_jsonl(Path(spec["data"]), limit=10**9)
    dataset = Dataset.from_list(rows)

    begins: list[float] = []
    snaps: list[tuple[float, float, int, int]] = []
    records: list[dict[str, Any]] = []  # what TRL logs each step

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize()

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001
            sync()
            begins.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            sync()
            snaps.append(snapshot())

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
            records.append({**(logs or {}), "step": state.global_step})

    _cuda_reset(spec["device"])
    t_start = mem.mark("start")  # before the model is loaded
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=dtype)
    ckpt = spec["variant"] == "trl"
    args = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"),
        per_device_train_batch_size=spec["pairs_per_step"], gradient_accumulation_steps=1,
        max_steps=spec["total_steps"], learning_rate=spec["lr"], beta=spec["beta"], loss_type=["sigmoid"],
        max_length=spec["max_length"], gradient_checkpointing=ckpt,
        bf16=gpu or spec["cpu_bf16"], fp16=False, use_cpu=not gpu,
        logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none",
        dataloader_num_workers=0, seed=spec["seed"], disable_tqdm=True,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[Timer()])
    tds = trainer.train_dataset
    dataset_tokens = sum(2 * len(p) + len(c) + len(r)
                         for p, c, r in zip(tds["prompt_ids"], tds["chosen_ids"], tds["rejected_ids"]))
    # tokens per step: the attention-mask sum of each collated batch (rows prompt+chosen, prompt+rejected)
    batch_tokens: list[int] = []
    collate = trainer.data_collator

    def counting_collator(examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate(examples)
        batch_tokens.append(int(batch["attention_mask"].sum()))
        return batch

    trainer.data_collator = counting_collator
    try:
        trainer.train()
    finally:
        shutil.rmtree(args.output_dir, ignore_errors=True)
    mem.mark("done")
    mem.stop()
    n = spec["total_steps"]
    if len(snaps) != n or len(batch_tokens) < n:
        raise RuntimeError(f"expected {n} steps and batches from TRL, got {len(snaps)} / {len(batch_tokens)}")
    ends = [x[0] for x in snaps]
    res = _step_figures(snaps, batch_tokens[:n], begins[0])
    logged = [r["num_tokens"] for r in records if "num_tokens" in r]
    res.update({
        "variant": spec["variant"], "tokens_per_s": res["loop_tokens_per_s"],
        "tokens_per_cpu_s_with_ref": res["tokens_per_cpu_s"],  # the reference forward is inside each step
        "whole_run_tokens_per_s": round(res["all_tokens"] / (ends[-1] - begins[0]), 2),
        "dataset_tokens": dataset_tokens, "logged_num_tokens": logged[-1] if logged else None,
        "peak_rss_mb": mem.peak_mb(t_start, ends[-1]), "rss_before_load_mb": round(mem.samples[0][1] / 1024, 1),
        "ru_maxrss_mb": ru_maxrss_mb(), "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
        "reference": "frozen copy, forward every step" if trainer.ref_model is not None else "none/precomputed",
        "optimizer": f"{type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, 'optimizer') else trainer.optimizer).__name__}"
                     f" ({trainer.args.optim})",
        "lr_scheduler": str(trainer.args.lr_scheduler_type),
        "bf16": bool(trainer.args.bf16), "pad_to_multiple_of": trainer.args.pad_to_multiple_of,
        "losses": [r["loss"] for r in records if "loss" in r],
        **_cuda_peak(spec["device"]),
    })
    return res


# ------------------------------------------------------------------------------------ orchestration


def build_random_llama(directory: Path, tokenizer_dir: str, size: str) -> dict[str, Any]:
    """A Llama-3.2-1B-shaped model with random weights (bf16), saved with the SmolLM2 tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    shapes = {"1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                         intermediate_size=8192, vocab_size=128256, head_dim=64),
              "tiny": dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           intermediate_size=512, vocab_size=49152, head_dim=64)}[size]
    config = LlamaConfig(**shapes, max_position_embeddings=8192, tie_word_embeddings=True, rope_theta=500000.0,
                         rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=2, dtype="bfloat16")
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(directory)
    n_total = sum(p.numel() for p in model.parameters())
    n_embed = model.get_input_embeddings().weight.numel()
    head = config.vocab_size * config.hidden_size  # LM-head FLOPs count even when its weight is tied
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"shape": shapes, "params_total": n_total, "params_compute": n_total - n_embed + head}


def run_worker(variant: str, spec: dict[str, Any], timeout: float, wait_idle: float = 0.0,
               idle_threshold: float = 0.5) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({**spec, "variant": variant}, fh)
        spec_file = fh.name
    result_file = spec_file + ".result"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--spec", spec_file,
           "--result", result_file]
    load_before = None
    if wait_idle > 0:
        load_before = wait_for_idle(wait_idle, idle_threshold)
    print(f"[bench] running {variant} ..." + (f" (other processes: {load_before} cores busy)" if wait_idle > 0 else ""),
          flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, timeout=timeout, capture_output=True, text=True)
    if proc.returncode != 0 or not Path(result_file).is_file():
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise RuntimeError(f"worker {variant} failed (exit {proc.returncode})")
    res = json.loads(Path(result_file).read_text())
    res["process_wall_s"] = round(time.perf_counter() - t0, 1)
    res["other_load_before_cores"] = load_before
    for f in (spec_file, result_file):
        Path(f).unlink(missing_ok=True)
    print(f"[bench] {variant}: {res['tokens_per_s']:.1f} tokens/s, peak RSS {res['peak_rss_mb']:.0f} MB "
          f"({res['process_wall_s']:.0f} s; other processes kept {res['other_load_cores']} cores busy)", flush=True)
    return res


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant over repeats: medians of the numeric figures; the per-step lists of the first run."""
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[0])
    for k, v in runs[0].items():
        values = [r.get(k) for r in runs]
        if isinstance(v, (int, float)) and not isinstance(v, bool) and len(set(values)) > 1:
            out[k] = rnd(float(median([x for x in values if isinstance(x, (int, float))])))
    out["repeats"] = len(runs)
    out["tokens_per_s_each"] = [r["tokens_per_s"] for r in runs]
    out["peak_rss_mb_each"] = [r["peak_rss_mb"] for r in runs]
    return out


def print_table(results: dict[str, dict[str, Any]], base: str, device: str) -> None:
    cols = ["variant", "ckpt", "tok/s", "tok/s loop", "median step tok/s", "whole run tok/s", "peak RSS MB",
            "ru_maxrss MB", "tok/CPU-s", "others' load", "vs TRL(default)"]
    if device == "cuda":
        cols += ["cuda max alloc MB", "MFU train", "MFU +ref"]
    rows = []
    for name, r in results.items():
        row = [name, "yes" if r.get("gradient_checkpointing") else "no", f"{r['tokens_per_s']:.1f}",
               f"{r['loop_tokens_per_s']:.1f}", f"{r['median_step_tokens_per_s']:.1f}",
               f"{r['whole_run_tokens_per_s']:.1f}", f"{r['peak_rss_mb']:.0f}", f"{r['ru_maxrss_mb']:.0f}",
               f"{r['tokens_per_cpu_s_with_ref']:.1f}", f"{r['other_load_cores']:.2f}",
               f"{r['tokens_per_s'] / results[base]['tokens_per_s']:.2f}x" if base in results else "-"]
        if device == "cuda":
            row += [f"{r.get('cuda_max_allocated_mb', float('nan')):.0f}", f"{r.get('mfu_train', float('nan')):.3f}",
                    f"{r.get('mfu_with_ref', float('nan')):.3f}"]
        rows.append(row)
    print_rows(cols, rows)


def orchestrate(opts: argparse.Namespace) -> dict[str, Any]:
    import torch

    from alignkit.models import load_model
    from alignkit.models.load import ModelConfig

    gpu = opts.device == "cuda"
    if gpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    variants = list(VARIANTS if opts.variants == "all" else opts.variants.split(","))
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)} or 'all'")
    threads = opts.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    steps = opts.steps if opts.steps is not None else 8
    pairs_per_step = opts.pairs_per_step or (8 if gpu else 4)
    total_steps = steps + opts.warmup_steps
    if opts.warmup_steps != 1:
        raise SystemExit("--warmup-steps: only 1 is supported (the first step is left out of the measurement)")
    n_pairs = pairs_per_step * total_steps
    work = Path(tempfile.mkdtemp(prefix="dpo-vs-trl-"))

    # the model: alignkit's built-in name resolves to a cached directory of safetensors; TRL gets that directory
    t0 = time.perf_counter()
    if opts.tokenizer:  # a GPU machine without the SmolLM2 package: its tokenizer files are enough there
        from transformers import AutoTokenizer

        source, tokenizer = opts.tokenizer, AutoTokenizer.from_pretrained(opts.tokenizer)
    else:
        loaded = load_model(ModelConfig(name=opts.model, device="cpu", dtype="float32"), for_training=False)
        source, tokenizer = loaded.source, loaded.tokenizer
        del loaded
    model_info: dict[str, Any] = {"name": opts.model, "source": source}
    random_model = opts.random_model or ("1b" if gpu else "none")
    if random_model != "none":
        model_dir = work / f"random-llama-{random_model}"
        model_info.update(build_random_llama(model_dir, source, random_model))
        model_info.update({"name": f"random-init Llama ({random_model}: "
                                   + ("Llama-3.2-1B shape" if random_model == "1b" else "tiny smoke-test shape") + ")",
                           "source": str(model_dir)})
        source = alignkit_model = str(model_dir)
    else:
        alignkit_model = opts.model
    print(f"[bench] model ready in {time.perf_counter() - t0:.1f} s: {source}", flush=True)

    # the data: the first N pairs of the quickstart set (or synthetic pairs of about the same size)
    data_path = Path(opts.data) if opts.data else QUICKSTART
    if gpu:
        base = read_jsonl(data_path, n_pairs) if data_path.is_file() else None
        rows = synth_pairs(tokenizer, n_pairs, opts.gpu_prompt_tokens, opts.gpu_reply_tokens, base)
        data_source = f"{data_path} texts repeated to ~{opts.gpu_prompt_tokens}+{opts.gpu_reply_tokens} tokens" \
            if base else f"synthetic ~{opts.gpu_prompt_tokens}+{opts.gpu_reply_tokens} tokens"
    elif data_path.is_file():
        rows = read_jsonl(data_path, n_pairs)
        data_source = str(data_path.relative_to(REPO) if data_path.is_relative_to(REPO) else data_path)
        if len(rows) < n_pairs:
            raise SystemExit(f"{data_path} has {len(rows)} pairs; {n_pairs} needed ({total_steps} steps x {pairs_per_step})")
    else:
        if opts.data:
            raise SystemExit(f"--data {opts.data}: file not found")
        print(f"[bench] WARNING: {QUICKSTART} not found; using synthetic pairs of similar size", flush=True)
        rows = synth_pairs(tokenizer, n_pairs, opts.synthetic_prompt_tokens, opts.synthetic_reply_tokens)
        data_source = f"synthetic (~{opts.synthetic_prompt_tokens} prompt + ~{opts.synthetic_reply_tokens} reply tokens)"
    data_file = work / "pairs.jsonl"
    data_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    seq_tokens = [len(tokenizer(tokenizer.apply_chat_template(r["prompt"] + r[k], tokenize=False),
                                add_special_tokens=False)["input_ids"]) for r in rows for k in ("chosen", "rejected")]
    if max(seq_tokens) > opts.max_length:
        print(f"[bench] WARNING: the longest sequence has {max(seq_tokens)} tokens > max_length {opts.max_length}; "
              "the two sides truncate differently", flush=True)

    spec = {"device": opts.device, "threads": threads, "data": str(data_file), "model_dir": source,
            "alignkit_model": alignkit_model, "pairs_per_step": pairs_per_step, "total_steps": total_steps,
            "max_length": opts.max_length, "max_prompt_length": opts.max_prompt_length, "lr": opts.lr,
            "beta": opts.beta, "seed": opts.seed, "cpu_bf16": opts.precision == "bf16"}
    settings = {
        "device": opts.device, "model": model_info["name"], "model_source": model_info["source"],
        "fine_tune": "full (no LoRA)", "precision": "bf16 (weights + autocast)" if gpu else (
            "fp32 weights, bf16 autocast (both libraries' default here)" if opts.precision == "bf16" else "fp32"),
        "pairs_per_step": pairs_per_step, "gradient_accumulation": 1, "measured_steps": steps,
        "warmup_steps": opts.warmup_steps, "pairs": n_pairs, "epochs": 1, "data": data_source,
        "sequence_tokens_min_median_max": [min(seq_tokens), int(median(seq_tokens)), max(seq_tokens)],
        "max_length": opts.max_length, "alignkit_max_prompt_tokens": opts.max_prompt_length,
        "lr": opts.lr, "beta": opts.beta, "loss": "sigmoid", "seed": opts.seed, "torch_threads": threads,
        "repeats": opts.repeats, "variants": variants,
    }

    if not gpu:
        a = snapshot()
        time.sleep(2.0)
        busy = other_load(a, snapshot())
        if busy > 0.5:
            print(f"[bench] WARNING: other processes are keeping {busy:.1f} of {os.cpu_count()} cores busy. Wall-clock "
                  "figures will be unreliable" + (f", and {threads} torch threads on an oversubscribed machine can be "
                  "10x+ slower (OpenMP barriers); consider --threads 1 or --wait-idle" if threads > 1 else ""),
                  flush=True)
    per_variant: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    try:
        for _ in range(opts.repeats):  # variants alternate within each repeat
            for v in variants:
                per_variant[v].append(run_worker(v, spec, opts.worker_timeout, opts.wait_idle, opts.idle_threshold))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {v: combine(rs) for v, rs in per_variant.items()}

    if gpu and "params_compute" in model_info:
        n = model_info["params_compute"]
        peak = (opts.peak_tflops or next((f for k, f in PEAK_TFLOPS.items() if k in torch.cuda.get_device_name(0)),
                                         float("nan"))) * 1e12
        settings.update({"peak_tflops": peak / 1e12, "params_compute": n,
                         "mfu_formula": "tokens_per_s x 6N / peak (train); x 8N with the reference forward (2N)"})
        for r in results.values():
            r["mfu_train"] = round(r["tokens_per_s"] * 6 * n / peak, 4)
            r["mfu_with_ref"] = round(r["tokens_per_s"] * 8 * n / peak, 4)

    def ratio(a: str, b: str, key: str = "tokens_per_s") -> float | None:
        if a in results and b in results and results[b][key]:
            return round(results[a][key] / results[b][key], 3)
        return None

    a, t = results.get("alignkit"), results.get("trl")
    tokens_check = {v: r.get("all_tokens") for v, r in results.items()}
    if "trl" in results:
        tokens_check["trl_dataset_tokens"] = results["trl"].get("dataset_tokens")
        tokens_check["trl_logged_num_tokens"] = results["trl"].get("logged_num_tokens")
    if "alignkit" in results:
        tokens_check["alignkit_loop_tokens"] = results["alignkit"].get("loop_tokens")
    tokens_check["match"] = len({x for x in tokens_check.values() if x is not None}) == 1

    summary = {
        "benchmark": "dpo_vs_trl", "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(x) for x in [os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
        "machine": machine_info(opts.device), "settings": settings,
        "alignkit_tokens_per_s": a["tokens_per_s"] if a else None,
        "trl_tokens_per_s": t["tokens_per_s"] if t else None,
        "trl_no_ckpt_tokens_per_s": results["trl_no_ckpt"]["tokens_per_s"] if "trl_no_ckpt" in results else None,
        "alignkit_ckpt_tokens_per_s": results["alignkit_ckpt"]["tokens_per_s"] if "alignkit_ckpt" in results else None,
        "alignkit_peak_rss_mb": a["peak_rss_mb"] if a else None,
        "trl_peak_rss_mb": t["peak_rss_mb"] if t else None,
        "trl_no_ckpt_peak_rss_mb": results["trl_no_ckpt"]["peak_rss_mb"] if "trl_no_ckpt" in results else None,
        "alignkit_ckpt_peak_rss_mb": results["alignkit_ckpt"]["peak_rss_mb"] if "alignkit_ckpt" in results else None,
        "speedup": ratio("alignkit", "trl"),
        "speedup_vs_trl_no_checkpointing": ratio("alignkit", "trl_no_ckpt"),
        "speedup_matched_checkpointing": ratio("alignkit_ckpt", "trl"),
        "speedup_loop_only": (round(a["loop_tokens_per_s"] / t["tokens_per_s"], 3) if a and t else None),
        "speedup_median_step": None,
        "speedup_whole_run": ratio("alignkit", "trl", "whole_run_tokens_per_s"),
        "memory_ratio_vs_trl": ratio("alignkit", "trl", "peak_rss_mb"),
        "memory_ratio_vs_trl_no_ckpt": ratio("alignkit", "trl_no_ckpt", "peak_rss_mb"),
        "speedup_cpu_time": ratio("alignkit", "trl", "tokens_per_cpu_s_with_ref"),
        "speedup_cpu_time_vs_trl_no_checkpointing": ratio("alignkit", "trl_no_ckpt", "tokens_per_cpu_s_with_ref"),
        "speedup_cpu_time_loop_only": ratio("alignkit", "trl", "tokens_per_cpu_s"),
        "max_other_load_cores": max(r["other_load_cores"] for r in results.values()),
        "contended": max(r["other_load_cores"] for r in results.values()) > 0.5,
        "tokens_check": tokens_check, "results": results,
    }
    if t and a and "median_step_tokens_per_s_with_ref" in a:  # median of per-step rates; TRL has no separate ref pass
        summary["speedup_median_step"] = round(a["median_step_tokens_per_s_with_ref"] / t["median_step_tokens_per_s"], 3)
    if gpu:
        summary["mfu"] = {v: {"train": r["mfu_train"], "with_ref": r["mfu_with_ref"]} for v, r in results.items()}
        summary["cuda_max_allocated_mb"] = {v: r.get("cuda_max_allocated_mb") for v, r in results.items()}
    print_table(results, "trl", opts.device)
    if summary["contended"]:
        print(f"WARNING: other processes kept up to {summary['max_other_load_cores']} cores busy during the measured "
              "steps; wall-clock figures are unreliable (see tok/CPU-s, rerun on a quiet machine or with --wait-idle)")
    print(f"tokens counted (prompt counted once per reply, no padding): {tokens_check}")
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--model", default="smollm2-135m-instruct", help="alignkit model name (CPU); on CUDA its tokenizer is reused")
    p.add_argument("--tokenizer", default=None, help="a tokenizer directory instead of loading --model (with --random-model)")
    p.add_argument("--random-model", choices=["none", "1b", "tiny"], default=None,
                   help="use a random-init Llama of this shape instead of --model (default: 1b on CUDA, none on CPU)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated from {', '.join(VARIANTS)}, or 'all'")
    p.add_argument("--steps", type=int, default=None, help="measured optimizer steps per variant (default 8)")
    p.add_argument("--warmup-steps", type=int, default=1, help="unmeasured steps first (1)")
    p.add_argument("--pairs-per-step", type=int, default=None, help="batch size in pairs (default 4 CPU, 8 CUDA)")
    p.add_argument("--max-length", type=int, default=None, help="max prompt+reply tokens (default 512 CPU, 1024 CUDA)")
    p.add_argument("--max-prompt-length", type=int, default=None, help="alignkit's max_prompt_tokens (default max-length/2)")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                   help="CPU: bf16 autocast on both sides (the default of both libraries on an AMX CPU: TRL's bf16=True, "
                        "alignkit's precision=auto) or fp32 on both")
    p.add_argument("--lr", type=float, default=5e-6)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="conversational preference .jsonl (default: the quickstart set)")
    p.add_argument("--synthetic-prompt-tokens", type=int, default=30, help="if the quickstart set is missing")
    p.add_argument("--synthetic-reply-tokens", type=int, default=55, help="if the quickstart set is missing")
    p.add_argument("--gpu-prompt-tokens", type=int, default=100, help="--device cuda: prompt length")
    p.add_argument("--gpu-reply-tokens", type=int, default=400, help="--device cuda: reply length")
    p.add_argument("--threads", type=int, default=None, help="torch threads in every worker (default: torch's default here)")
    p.add_argument("--repeats", type=int, default=1, help="run every variant this many times (alternating); medians")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default from the GPU name)")
    p.add_argument("--worker-timeout", type=float, default=1800, help="seconds per worker process")
    p.add_argument("--wait-idle", type=float, default=0.0,
                   help="before each worker, wait up to this many seconds for other processes to go quiet")
    p.add_argument("--idle-threshold", type=float, default=0.5, help="'quiet' = others use fewer cores than this")
    p.add_argument("--json-out", default=None, help="also write the JSON result to this file")
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.max_length is None:
        opts.max_length = 1024 if opts.device == "cuda" else 512
    if opts.max_prompt_length is None:
        opts.max_prompt_length = opts.max_length // 2
    return opts


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if opts.worker:
        spec = json.loads(Path(opts.spec).read_text())
        result = (worker_alignkit if opts.worker.startswith("alignkit") else worker_trl)(spec)
        Path(opts.result).write_text(json.dumps(result))
        return
    summary = orchestrate(opts)
    line = json.dumps(summary, separators=(",", ":"))
    if opts.json_out:
        Path(opts.json_out).write_text(line + "\n")
    print(line, flush=True)


if __name__ == "__main__":
    main()
