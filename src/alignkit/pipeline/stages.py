"""Stage kinds: each wraps one existing alignkit job (eval, red team, CAI, labeling, training, ...) and returns
the paths / ids later stages refer to as ``${stage.output}``.

A stage writes only under its own directory (``<output_dir>/<stage>/``) and into the pipeline's results database,
and every job it wraps resumes by itself (evals and red-team runs skip stored items, trainers restart from their
newest checkpoint, CAI and labeling keep journals), so re-running a failed stage picks up where it stopped.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from alignkit.errors import AlignkitError, ConfigError

__all__ = ["StageKind", "StageContext", "STAGE_KINDS"]

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    name: str
    dir: Path  # <output_dir>/<stage>
    db: Path  # the pipeline's results database
    data_dir: str | None
    seed: int
    where: str  # "<recipe file>: stage '<name>'" for errors
    progress: bool = True
    gates: list[Any] = dataclasses.field(default_factory=list)  # the recipe's gates (the report stage checks them)


@dataclass
class StageKind:
    run: Callable[[dict[str, Any], StageContext], dict[str, Any]]
    outputs: tuple[str, ...]
    keys: Callable[[], set[str]]  # the settings a stage of this kind accepts
    help: str = ""

    def check(self, params: Mapping[str, Any], where: str) -> None:
        allowed = self.keys()
        for key in params:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; accepted: {', '.join(sorted(allowed))}"
                raise ConfigError(f"{where}: unknown key '{key}'{hint}")


def _fields(cls_path: str, minus: tuple[str, ...] = ()) -> Callable[[], set[str]]:
    def keys() -> set[str]:
        import importlib

        module, name = cls_path.rsplit(":", 1)
        cls = getattr(importlib.import_module(module), name)
        return {f.name for f in dataclasses.fields(cls)} - set(minus)

    return keys


def _build(cls: type, values: dict[str, Any], ctx: StageContext) -> Any:
    from alignkit.config import from_dict

    return from_dict(cls, values, where=ctx.where)


def _defaults(params: dict[str, Any], ctx: StageContext, *names: str) -> dict[str, Any]:
    out = dict(params)
    if "data_dir" in names and ctx.data_dir and "data_dir" not in out:
        out["data_dir"] = ctx.data_dir
    if "seed" in names and "seed" not in out:
        out["seed"] = ctx.seed
    if "progress" in names:
        out["progress"] = ctx.progress and out.get("progress", True)
    return out


# ------------------------------------------------------------------------------------------------ eval


def _eval(params: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    from alignkit.evals.runner import EvalConfig, format_table, run_eval

    values = _defaults(params, ctx, "data_dir", "seed", "progress")
    values.update(db=str(ctx.db), output_dir=str(ctx.dir))
    outcome = run_eval(_build(EvalConfig, values, ctx))
    print(format_table(outcome.metrics, only_primary=True))
    return {"run_id": outcome.run_id, "summary": str(outcome.summary_path)}


# ---------------------------------------------------------------------------------------------- redteam


def _redteam(params: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    from alignkit.safety.redteam.config import RedteamConfig
    from alignkit.safety.redteam.runner import format_table, run_redteam

    values = _defaults(params, ctx, "data_dir", "seed", "progress")
    values.update(db=str(ctx.db), output_dir=str(ctx.dir))
    out = run_redteam(_build(RedteamConfig, values, ctx))
    print(format_table(out.metrics, out.audit))
    return {"run_id": out.run_id, "summary": str(out.summary_path)}


_EXPORT_KEYS = {"run", "heldout_fraction", "seed", "successful_only"}


def _redteam_export(params: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    from alignkit.safety.redteam.export import export_attacks
    from alignkit.store import ResultStore

    if not params.get("run"):
        raise ConfigError(f"{ctx.where}: 'run' is required (e.g. run: ${{redteam.run_id}})")
    with ResultStore(ctx.db) as store:
        s = export_attacks(store, str(params["run"]), ctx.dir, heldout_fraction=float(params.get("heldout_fraction", 0.5)),
                           seed=int(params.get("seed", ctx.seed)), successful_only=bool(params.get("successful_only", False)))
    print(f"exported {s['exported']} of {s['attacks']} attacks: {s['train_preference_pairs']} training pairs on "
          f"{s['train_behaviors']} behaviors; {s['heldout_behaviors']} behaviors held out")
    files = s["files"]
    return {"train": files["train"], "train_prefs": files["train_prefs"], "heldout": files["heldout"],
            "split": files["split"], "summary": str(ctx.dir / "summary.json")}


# ------------------------------------------------------------------------------------------ feedback data


def _cai(params: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    from alignkit.feedback.cai import run_sl
    from alignkit.feedback.settings import CAIConfig

    values = _defaults(params, ctx, "data_dir", "seed", "progress")
    values["output_dir"] = str(ctx.dir)
    s = run_sl(_build(CAIConfig, values, ctx))
    print(f"CAI: {s['prompts']} prompts, {s['sft_rows']} revised replies, {s['preference_pairs']} preference pairs")
    return {"sft": s["files"]["sft"], "prefs": s["files"]["prefs"], "records": s["files"]["records"],
            "summary": str(ctx.dir / "summary.json")}


def _label(params: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    from alignkit.feedback.label import run_label
    from alignkit.feedback.settings import LabelConfig

    values = _defaults(params, ctx, "data_dir", "progress")
    values["output"] = str(ctx.dir / "prefs.jsonl")
    s = run_label(_build(LabelConfig, values, ctx))
    print(f"labeled: {s['records']} preference records kept of {s['items']}")
    return {"prefs": str(ctx.dir / "prefs.jsonl"), "summary": str(ctx.dir / "prefs.summary.json")}


_CONCAT_KEYS = {"inputs", "kind_of_data"}


def _concat(params: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """Several preference (or conversation) data sets -> one conversational JSONL, each input validated."""
    from alignkit.data.builtin import resolve_data
    from alignkit.data.load import load_conversations, load_preferences
    from alignkit.feedback.io import atomic_write_jsonl

    inputs = params.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ConfigError(f"{ctx.where}: 'inputs' must be a non-empty list of data sets")
    kind = params.get("kind_of_data", "preferences")
    if kind not in ("preferences", "conversations"):
        raise ConfigError(f"{ctx.where}: kind_of_data must be preferences or conversations, got {kind!r}")
    rows: list[dict[str, Any]] = []
    counts = {}
    for spec in inputs:
        if kind == "preferences":
            recs = load_preferences(resolve_data(str(spec))).records
            new = [{"prompt": [m.to_dict() for m in r.prompt], "chosen": [m.to_dict() for m in r.chosen],
                    "rejected": [m.to_dict() for m in r.rejected], **({"margin": r.margin} if r.margin is not None else {})}
                   for r in recs]
        else:
            recs = load_conversations(resolve_data(str(spec))).records
            new = [{"messages": [m.to_dict() for m in r.messages]} for r in recs]
        counts[str(spec)] = len(new)
        rows.extend(new)
    out = ctx.dir / "data.jsonl"
    atomic_write_jsonl(out, rows)
    print("combined " + ", ".join(f"{n} from {s}" for s, n in counts.items()) + f" -> {out}")
    return {"data": str(out), "rows": len(rows)}


# ---------------------------------------------------------------------------------------------- training

_TRAIN_KEYS = {"method", "config", "set", "launch"}
_LAUNCH_KEYS = {"num_processes", "config_file", "cpu", "main_process_port"}


def _train(params: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """A trainer run in this process, or under `accelerate launch` when `launch` asks for several processes."""
    from alignkit.commands.train import TRAINERS, config_class, print_summary
    from alignkit.config import load_config, save_config

    method = params.get("method")
    if method not in TRAINERS:
        raise ConfigError(f"{ctx.where}: method must be one of {', '.join(sorted(TRAINERS))}, got {method!r}")
    sets = params.get("set") or {}
    if not isinstance(sets, Mapping):
        raise ConfigError(f"{ctx.where}: 'set' must map dotted trainer keys to values (e.g. optim.lr: 1e-4)")
    overrides = [f"{k}={json.dumps(v)}" for k, v in sets.items()]
    run_dir = ctx.dir / "run"
    overrides.append(f"run.output_dir={json.dumps(str(run_dir))}")
    if not ctx.progress:
        overrides.append("run.progress=false")
    try:
        cfg = load_config(config_class(method), params.get("config"), overrides)
    except ConfigError as e:
        raise ConfigError(f"{ctx.where}: {e}") from None
    launch = params.get("launch") or {}
    if not isinstance(launch, Mapping) or set(launch) - _LAUNCH_KEYS:
        raise ConfigError(f"{ctx.where}: 'launch' takes {', '.join(sorted(_LAUNCH_KEYS))}")
    procs = int(launch.get("num_processes", 1))
    if procs > 1 or launch.get("config_file"):
        ctx.dir.mkdir(parents=True, exist_ok=True)
        resolved = ctx.dir / "train-config.yaml"
        save_config(cfg, resolved)
        _accelerate_launch(method, resolved, launch, ctx)
        summary = json.loads((run_dir / "summary.json").read_text())
    else:
        import importlib

        summary = importlib.import_module(TRAINERS[method][0]).train(cfg)
    print_summary(method, summary, str(run_dir))
    final = summary.get("final_model") or str(run_dir / "final")
    return {"model": str(final), "run_dir": str(run_dir), "summary": str(run_dir / "summary.json")}


def launch_command(method: str, config: Path, launch: Mapping[str, Any]) -> list[str]:
    """The multi-process command for a train stage.

    GPUs (and any accelerate config file: DDP, FSDP, DeepSpeed, several machines) go through `accelerate launch`;
    several CPU processes go through torchrun, which accelerate then sees as a gloo process group (accelerate's own
    launcher runs CPU processes only under MPI).
    """
    procs = int(launch.get("num_processes", 1))
    port = str(launch.get("main_process_port", 29512))
    train = ["-m", "alignkit.cli", "train", method, "--config", str(config)]
    if launch.get("cpu") and not launch.get("config_file"):
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_port", port,
                *train]
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if launch.get("config_file"):
        cmd += ["--config_file", str(launch["config_file"])]
    else:
        cmd += ["--multi_gpu"] if procs > 1 else []
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return cmd + ["--num_processes", str(procs), "--main_process_port", port, *train]


def _accelerate_launch(method: str, config: Path, launch: Mapping[str, Any], ctx: StageContext) -> None:
    cmd = launch_command(method, config, launch)
    procs = int(launch.get("num_processes", 1))
    print("launching: " + " ".join(cmd[2:]), flush=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, procs))))
    done = subprocess.run(cmd, env=env)
    if done.returncode != 0:
        raise AlignkitError(f"{ctx.where}: the {procs}-process launch exited with code {done.returncode} "
                            "(its output is above)")


# ------------------------------------------------------------------------------------------- comparison

_TAX_KEYS = {"before", "after", "tasks"}


def _tax(params: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """The alignment tax: capability benchmarks of the aligned model against the base, paired per item."""
    from alignkit.evals.compare import compare_runs, format_comparison, tax_summary
    from alignkit.evals.registry import SUITES, resolve_tasks
    from alignkit.feedback.io import atomic_write_json
    from alignkit.store import ResultStore

    for key in ("before", "after"):
        if not params.get(key):
            raise ConfigError(f"{ctx.where}: '{key}' (an eval run id, e.g. ${{baseline.run_id}}) is required")
    tasks = resolve_tasks(params.get("tasks") or SUITES["tax"])
    with ResultStore(ctx.db) as store:
        results = compare_runs(store, str(params["before"]), str(params["after"]), tasks=tasks, primary_only=True)
    if not results:
        raise AlignkitError(f"{ctx.where}: the two eval runs share none of the tasks {', '.join(tasks)}")
    print(format_comparison(results, "base", "aligned"))
    summary = {"before": params["before"], "after": params["after"], **tax_summary(results),
               "comparisons": {t: [c.to_dict() for c in cs] for t, cs in results.items()}}
    path = atomic_write_json(ctx.dir / "tax.json", summary)
    return {"tax": str(path), "mean_delta": summary["mean_delta"]}


_REPORT_KEYS = {"before", "after", "redteam_before", "redteam_after", "split", "tax", "metrics", "title"}


def _report(params: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    from alignkit.pipeline.report import write_pipeline_report

    for key in ("before", "after"):
        if not params.get(key):
            raise ConfigError(f"{ctx.where}: '{key}' (an eval run id, e.g. ${{baseline.run_id}}) is required")
    return write_pipeline_report(params, ctx)


STAGE_KINDS: dict[str, StageKind] = {
    "eval": StageKind(_eval, ("run_id", "summary"), _fields("alignkit.evals.runner:EvalConfig", ("db", "output_dir")),
                      "alignkit eval: a suite of benchmarks and probes into the results store"),
    "redteam": StageKind(_redteam, ("run_id", "summary"),
                         _fields("alignkit.safety.redteam.config:RedteamConfig", ("db", "output_dir")),
                         "alignkit redteam: attacks, judged replies, ASR"),
    "redteam_export": StageKind(_redteam_export, ("train", "train_prefs", "heldout", "split", "summary"),
                                lambda: set(_EXPORT_KEYS), "successful attacks -> training prompts/pairs + held-out split"),
    "cai": StageKind(_cai, ("sft", "prefs", "records", "summary"),
                     _fields("alignkit.feedback.settings:CAIConfig", ("output_dir",)),
                     "Constitutional AI critique -> revision data"),
    "label": StageKind(_label, ("prefs", "summary"), _fields("alignkit.feedback.settings:LabelConfig", ("output",)),
                       "RLAIF: an AI judge labels preference pairs"),
    "concat": StageKind(_concat, ("data", "rows"), lambda: set(_CONCAT_KEYS), "combine data sets into one JSONL"),
    "train": StageKind(_train, ("model", "run_dir", "summary"), lambda: set(_TRAIN_KEYS),
                       "alignkit train sft|dpo|rm|ppo|grpo (accelerate launch for several processes)"),
    "tax": StageKind(_tax, ("tax", "mean_delta"), lambda: set(_TAX_KEYS), "capability deltas with paired tests"),
    "report": StageKind(_report, ("report", "headline", "summary"), lambda: set(_REPORT_KEYS),
                        "before/after HTML report, terminal summary and gate values"),
}
