"""alignkit's multiple-choice evaluation vs lm-evaluation-harness, same model, same items, same prompts.

TruthfulQA MC1/MC2 (2021, 817-question file) and ARC-Easy on SmolLM2-135M-Instruct. lm-eval's `hf` model
loads the same local weights directory that alignkit loads (`load_model(...).source`); its tasks are
lm-eval's own truthfulqa_mc1 / truthfulqa_mc2 / arc_easy configs pointed at local JSON files written
here from the shared benchmark data (the hub is not reachable), so both sides score identical
contexts and continuations. Both run in this process, with the same dtype (float32), device and thread
count; model loading is not timed. alignkit scores MC1 and MC2 in one pass (the MC2 choices contain the
MC1 choices); lm-eval runs them as two tasks, so its TruthfulQA time is mc1 + mc2.

    pip install -e ".[bench]"          # lm-eval==0.4.13
    python benchmarks/eval_vs_lm_eval.py                 # first 50 TruthfulQA and 100 ARC-Easy items
    python benchmarks/eval_vs_lm_eval.py --limit 0       # every item (slow on CPU)

Prints a table, then one JSON object (both scores, both times, speedup) as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

def _task_yamls(folder: Path, files: dict[str, Path]) -> None:
    """lm-eval task configs that include lm-eval's shipped ones and only swap the data source."""
    import lm_eval

    shipped = Path(lm_eval.__file__).parent / "tasks"
    (folder / "utils.py").write_text("from lm_eval.tasks.truthfulqa.utils import process_results_mc2  # noqa: F401\n")
    for name, source, split in (("truthfulqa_mc1", shipped / "truthfulqa" / "truthfulqa_mc1.yaml", "validation"),
                                ("truthfulqa_mc2", shipped / "truthfulqa" / "truthfulqa_mc2.yaml", "validation"),
                                ("arc_easy", shipped / "arc" / "arc_easy.yaml", "test")):
        data = files["truthfulqa" if name.startswith("truthfulqa") else "arc_easy"]
        text = source.read_text()
        if name == "truthfulqa_mc2":  # mc2 includes mc1's yaml; inline it so the include resolves here
            text = text.replace("include: truthfulqa_mc1.yaml", "include: local_truthfulqa_mc1.yaml")
        lines = [ln for ln in text.splitlines() if not ln.startswith(("task:", "tag:", "  - truthfulqa", "  - ai2_arc",
                                                                       "dataset_path:", "dataset_name:"))]
        splits = ["validation"] if split == "validation" else ["train", "validation", "test"]  # arc: same file
        header = [f"task: local_{name}", "dataset_path: json", "dataset_kwargs:", "  data_files:"]
        header += [f"    {s}: {data}" for s in splits]
        (folder / f"local_{name}.yaml").write_text("\n".join(header + lines) + "\n")


def _write_data(folder: Path, data_dir: Path, limit: int | None) -> tuple[dict[str, Path], list[Any], list[Any]]:
    """HF-layout JSON for lm-eval, built from the same alignkit items that alignkit scores."""
    from alignkit.evals.benchmarks.capability import ArcEasy
    from alignkit.evals.benchmarks.truthfulqa import TruthfulQAMC
    from alignkit.evals.task import EvalContext

    ctx = EvalContext(data_dir=data_dir)
    tqa = TruthfulQAMC().load(ctx)
    arc = ArcEasy().load(ctx)
    tqa, arc = (tqa[:limit], arc[: 2 * limit]) if limit else (tqa, arc)
    tqa_rows = []
    for item in tqa:
        n_true, n_false, best = item.data["n_true"], item.data["n_false"], item.data["best"]
        false = item.choices[n_true : n_true + n_false]
        tqa_rows.append({"question": item.data["question"],
                         "mc1_targets": {"choices": [item.choices[best]] + false, "labels": [1] + [0] * n_false},
                         "mc2_targets": {"choices": item.choices[: n_true + n_false],
                                         "labels": [1] * n_true + [0] * n_false}})
    arc_rows = [{"id": i.id, "question": i.prompt[len("Question: "): -len("\nAnswer:")], "answerKey": "ABCDE"[i.gold],
                 "choices": {"text": i.choices, "label": list("ABCDE"[: len(i.choices)])}} for i in arc]
    files = {"truthfulqa": folder / "truthfulqa.jsonl", "arc_easy": folder / "arc_easy.jsonl"}
    for key, rows in (("truthfulqa", tqa_rows), ("arc_easy", arc_rows)):
        files[key].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return files, tqa, arc


def _run_lm_eval(source: str, folder: Path, batch_size: int) -> dict[str, Any]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=source, dtype="float32", device="cpu", batch_size=batch_size)
    manager = TaskManager(include_path=str(folder))
    out: dict[str, Any] = {}
    for task in ("truthfulqa_mc1", "truthfulqa_mc2", "arc_easy"):
        start = time.perf_counter()
        res = lm_eval.simple_evaluate(model=lm, tasks=[f"local_{task}"], task_manager=manager, batch_size=batch_size,
                                      verbosity="WARNING", bootstrap_iters=0)
        seconds = time.perf_counter() - start
        metrics = res["results"][f"local_{task}"]
        out[task] = {"seconds": seconds, "acc": metrics["acc,none"], "acc_norm": metrics.get("acc_norm,none")}
    return out


def _run_alignkit(model: Any, tok: Any, tqa: list[Any], arc: list[Any], mode: str, tokens_per_batch: int,
                  data_dir: Path) -> dict[str, Any]:
    from alignkit.evals.benchmarks.capability import ArcEasy
    from alignkit.evals.benchmarks.truthfulqa import TruthfulQAMC
    from alignkit.evals.loglik import LoglikScorer
    from alignkit.evals.subject import Subject
    from alignkit.evals.task import EvalContext

    subject = Subject(generator=None, name="smollm2", scorer=LoglikScorer(model, tok, mode=mode,  # type: ignore[arg-type]
                                                                           tokens_per_batch=tokens_per_batch))
    ctx = EvalContext(data_dir=data_dir)
    out: dict[str, Any] = {}
    for name, task, items in (("truthfulqa_mc", TruthfulQAMC(), tqa), ("arc_easy", ArcEasy(), arc)):
        start = time.perf_counter()
        records = task.run(subject, items, ctx)
        seconds = time.perf_counter() - start
        agg = task.aggregate(records, ci=False)
        out[name] = {"seconds": seconds, **{k: m.value for k, m in agg.items()}}
    out["tokens_scored"] = subject.scorer.tokens_scored
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--limit", type=int, default=50, help="TruthfulQA questions (ARC-Easy gets 2x); 0 = all")
    p.add_argument("--batch-size", type=int, default=16, help="lm-eval batch size (sequences)")
    p.add_argument("--tokens-per-batch", type=int, default=4096, help="alignkit batch budget (tokens)")
    p.add_argument("--threads", type=int, default=0, help="torch threads for both sides (0 = torch default)")
    p.add_argument("--ablation", action="store_true", help="also time alignkit with context sharing off (plain)")
    p.add_argument("--data-dir", default=os.environ.get("ALIGNKIT_BENCHMARKS", str(REPO.parent / "shared" / "benchmarks")))
    args = p.parse_args()

    import torch

    from alignkit.models.load import ModelConfig, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(ModelConfig(name="smollm2-135m-instruct", dtype="float32", device="cpu"), for_training=False)
    with tempfile.TemporaryDirectory(prefix="alignkit-lmeval-") as tmp:
        folder = Path(tmp)
        files, tqa, arc = _write_data(folder, Path(args.data_dir), args.limit or None)
        _task_yamls(folder, files)
        ours = _run_alignkit(loaded.model, loaded.tokenizer, tqa, arc, "packed", args.tokens_per_batch, Path(args.data_dir))
        plain = (_run_alignkit(loaded.model, loaded.tokenizer, tqa, arc, "plain", args.tokens_per_batch,
                               Path(args.data_dir)) if args.ablation else None)
        theirs = _run_lm_eval(loaded.source, folder, args.batch_size)
    _report(args, ours, theirs, plain, len(tqa), len(arc))


def _report(args: argparse.Namespace, ours: dict[str, Any], theirs: dict[str, Any], plain: dict[str, Any] | None,
            n_tqa: int, n_arc: int) -> None:
    import torch

    rows = [("truthfulqa_mc1", ours["truthfulqa_mc"]["mc1"], theirs["truthfulqa_mc1"]["acc"]),
            ("truthfulqa_mc2", ours["truthfulqa_mc"]["mc2"], theirs["truthfulqa_mc2"]["acc"]),
            ("arc_easy acc", ours["arc_easy"]["acc"], theirs["arc_easy"]["acc"]),
            ("arc_easy acc_norm", ours["arc_easy"]["acc_norm"], theirs["arc_easy"]["acc_norm"])]
    t_ours = {"truthfulqa": ours["truthfulqa_mc"]["seconds"], "arc_easy": ours["arc_easy"]["seconds"]}
    t_theirs = {"truthfulqa": theirs["truthfulqa_mc1"]["seconds"] + theirs["truthfulqa_mc2"]["seconds"],
                "arc_easy": theirs["arc_easy"]["seconds"]}
    total_ours, total_theirs = sum(t_ours.values()), sum(t_theirs.values())
    print(f"SmolLM2-135M-Instruct, {n_tqa} TruthfulQA questions, {n_arc} ARC-Easy questions, float32, "
          f"{torch.get_num_threads()} torch threads, {platform.processor() or platform.machine()}")
    print(f"{'score':<20} {'alignkit':>9} {'lm-eval':>9} {'diff (pts)':>11}")
    for name, a, b in rows:
        print(f"{name:<20} {a:>9.4f} {b:>9.4f} {100 * (a - b):>+11.2f}")
    print(f"\n{'time (s)':<20} {'alignkit':>9} {'lm-eval':>9} {'speedup':>9}")
    for key in t_ours:
        print(f"{key:<20} {t_ours[key]:>9.1f} {t_theirs[key]:>9.1f} {t_theirs[key] / t_ours[key]:>8.2f}x")
    print(f"{'total':<20} {total_ours:>9.1f} {total_theirs:>9.1f} {total_theirs / total_ours:>8.2f}x")
    if plain:
        t_plain = plain["truthfulqa_mc"]["seconds"] + plain["arc_easy"]["seconds"]
        print(f"ablation: alignkit without context sharing/packing (plain rows): {t_plain:.1f} s "
              f"({total_theirs / t_plain:.2f}x vs lm-eval)")
    result = {
        "benchmark": "eval_vs_lm_eval", "model": "smollm2-135m-instruct", "truthfulqa_questions": n_tqa,
        "arc_easy_questions": n_arc, "threads": torch.get_num_threads(), "lm_eval_batch_size": args.batch_size,
        "scores": {name: {"alignkit": round(a, 6), "lm_eval": round(b, 6), "diff_points": round(100 * (a - b), 4)}
                   for name, a, b in rows},
        "alignkit_s": round(total_ours, 2), "lm_eval_s": round(total_theirs, 2),
        "per_benchmark_speedup": {k: round(t_theirs[k] / t_ours[k], 3) for k in t_ours},
        "speedup": round(total_theirs / total_ours, 3),
        "plain_alignkit_s": round(plain["truthfulqa_mc"]["seconds"] + plain["arc_easy"]["seconds"], 2) if plain else None,
        "max_abs_diff_points": round(max(abs(100 * (a - b)) for _, a, b in rows), 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
