"""Closing the loop: successful attacks become training data, and a before/after comparison on held-out
behaviors shows what alignment changed.

    alignkit redteam export latest -o runs/redteam/export        # train.jsonl, train_prefs.jsonl, split.json
    alignkit cai sl prompts=runs/redteam/export/train.jsonl output_dir=runs/rt-cai
    alignkit train dpo --config recipes/redteam-dpo.yaml          # data.train = runs/rt-cai/prefs.jsonl
    alignkit redteam --target runs/rt-dpo/final --only-behaviors runs/redteam/export/split.json
    alignkit redteam compare <before run> <after run> --split runs/redteam/export/split.json

The split is by *behavior*: every attack on a held-out behavior stays out of the training files, so the
after-run measures generalisation to behaviors the model was never trained to refuse, not memorisation.
`train.jsonl` holds the attack conversations (ending with the attacking user turn) in the conversational
prompt format `alignkit cai` reads; `train_prefs.jsonl` pairs each with a refusal that names the hazard
and offers a safe alternative (the guard's wording) over the target's harmful reply, in the DPO format
(not for prompt injections: the right reply there does the user's task and ignores the injected one, which
only a model can write, so those reach training through `alignkit cai`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from alignkit.errors import AlignkitError
from alignkit.evals.records import Record

if TYPE_CHECKING:
    from alignkit.evals.metrics import Comparison
    from alignkit.store import ResultStore

__all__ = ["attack_records", "export_attacks", "compare_runs", "format_comparison", "by_family"]


def attack_records(store: "ResultStore", run_id: str) -> list[Record]:
    """Every attack transcript of a red-team run (not the XSTest controls)."""
    tasks = [t for t in store.tasks(run_id) if t.startswith("redteam/") and t != "redteam/control"]
    if not tasks:
        raise AlignkitError(f"run {run_id} holds no red-team transcripts (is it an `alignkit redteam` run?)")
    return [r for t in tasks for r in store.records(run_id, t)]


def _prompt_of(record: Record) -> list[dict[str, str]]:
    """The conversation that drew the harmful reply, ending with the attacking user turn."""
    transcript = [dict(m) for m in record.meta.get("transcript") or []]
    if transcript and transcript[-1]["role"] == "assistant":
        transcript = transcript[:-1]
    if not transcript or transcript[-1]["role"] != "user":
        return [{"role": "user", "content": record.prompt}]
    return transcript


def export_attacks(store: "ResultStore", run_ref: str, out_dir: str | Path, *, heldout_fraction: float = 0.5,
                   seed: int = 0, successful_only: bool = True) -> dict[str, Any]:
    """Write train.jsonl / train_prefs.jsonl / heldout.jsonl / split.json / summary.json; return the summary."""
    from alignkit.feedback.constitution import default_constitution
    from alignkit.feedback.io import atomic_write_json, atomic_write_jsonl
    from alignkit.safety.redteam.behaviors import split_behaviors
    from alignkit.safety.refusal import refusal_message

    run = store.run(run_ref)
    records = attack_records(store, run.run_id)
    train_ids, heldout_ids = split_behaviors([str(r.meta["behavior_id"]) for r in records], heldout_fraction, seed)
    chosen = [r for r in records if not successful_only or r.scores.get("asr") == 1.0]
    constitution = default_constitution()
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "heldout": []}
    prefs, seen = [], set()
    for r in chosen:
        prompt = _prompt_of(r)
        key = json.dumps(prompt, sort_keys=True)
        if key in seen:  # the same attack text twice (e.g. two runs merged) trains once
            continue
        seen.add(key)
        part = "heldout" if r.meta["behavior_id"] in set(heldout_ids) else "train"
        row = {"prompt": prompt, "behavior_id": r.meta["behavior_id"], "behavior": r.meta.get("behavior", ""),
               "family": r.meta.get("family"), "attack": r.meta.get("attack"), "hazard": r.meta.get("hazard"),
               "source": f"{run.run_id}:{r.item_id}", "attack_response": r.output}
        rows[part].append(row)
        # an injected document still deserves its summary, not a refusal: those pairs come from `alignkit cai`
        # (and a reply that already refuses has nothing to unlearn)
        if part == "train" and r.output.strip() and r.meta.get("family") != "injection" \
                and r.scores.get("refusal") != 1.0:
            refusal = refusal_message(r.meta.get("hazard"), constitution)[0]
            prefs.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": refusal}],
                          "rejected": [{"role": "assistant", "content": r.output}], "source": row["source"]})
    out = Path(out_dir)
    files = {"train": out / "train.jsonl", "train_prefs": out / "train_prefs.jsonl", "heldout": out / "heldout.jsonl",
             "split": out / "split.json"}
    atomic_write_jsonl(files["train"], rows["train"])
    atomic_write_jsonl(files["train_prefs"], prefs)
    atomic_write_jsonl(files["heldout"], rows["heldout"])
    atomic_write_json(files["split"], {"run_id": run.run_id, "seed": seed, "heldout_fraction": heldout_fraction,
                                       "train_behaviors": train_ids, "heldout_behaviors": heldout_ids})
    summary = {"run_id": run.run_id, "attacks": len(records), "exported": len(rows["train"]) + len(rows["heldout"]),
               "successful_only": successful_only, "train_prompts": len(rows["train"]),
               "train_preference_pairs": len(prefs), "heldout_prompts": len(rows["heldout"]),
               "train_behaviors": len(train_ids), "heldout_behaviors": len(heldout_ids),
               "by_family": _count(rows["train"], "family"), "files": {k: str(v) for k, v in files.items()}}
    atomic_write_json(out / "summary.json", summary)
    return summary


def _count(rows: Sequence[dict[str, Any]], key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r.get(key))] = counts.get(str(r.get(key)), 0) + 1
    return dict(sorted(counts.items()))


def by_family(ids: Sequence[str], records: dict[str, Record]) -> dict[str, list[str]]:
    """{"all": ids, family: ids, ...} with families in run order."""
    from alignkit.safety.redteam.base import FAMILY_ORDER

    groups: dict[str, list[str]] = {"all": list(ids)}
    for family in (*FAMILY_ORDER, *sorted({str(records[i].meta.get("family")) for i in ids})):
        members = [i for i in ids if records[i].meta.get("family") == family]
        if members and family not in groups:
            groups[family] = members
    return groups


def compare_runs(store: "ResultStore", before: str, after: str, *, split: str | None = None) -> dict[str, Any]:
    """ASR before vs after per family and overall, paired by attack case (McNemar's exact test), on the
    held-out behaviors of `split` (a `split.json`) when given."""
    from alignkit.evals.metrics import compare_paired, wilson
    from alignkit.safety.redteam.behaviors import read_split

    a_run, b_run = store.run(before), store.run(after)
    a = {r.item_id: r for r in attack_records(store, a_run.run_id)}
    b = {r.item_id: r for r in attack_records(store, b_run.run_id)}
    keep = set(read_split(split)) if split else None
    ids = sorted(i for i in a.keys() & b.keys() if keep is None or a[i].meta.get("behavior_id") in keep)
    if not ids:
        raise AlignkitError(f"runs {a_run.run_id} and {b_run.run_id} share no attack cases"
                            f"{' on the held-out behaviors of ' + split if split else ''}; attack the same behaviors "
                            "with the same families (and --only-behaviors SPLIT for the after run)")
    groups = by_family(ids, a)
    rows = []
    for name, members in groups.items():
        va, vb = [a[i].scores["asr"] for i in members], [b[i].scores["asr"] for i in members]
        comp: "Comparison" = compare_paired(f"asr:{name}", va, vb, higher_is_better=False)
        # compliance (the judge's refusal rubric says the target did not refuse): the AdvBench-style reading,
        # which moves even when a small model's compliant replies are too vague for the harm rubric
        ca, cb = [1.0 - a[i].scores["refusal"] for i in members], [1.0 - b[i].scores["refusal"] for i in members]
        comply: "Comparison" = compare_paired(f"complied:{name}", ca, cb, higher_is_better=False)
        rows.append({"group": name, "n": len(members), "before": comp.a, "before_ci": wilson(sum(va), len(va)),
                     "after": comp.b, "after_ci": wilson(sum(vb), len(vb)), "delta": comp.delta, "p": comp.p,
                     "test": comp.test, "complied_before": comply.a, "complied_after": comply.b,
                     "complied_delta": comply.delta, "complied_p": comply.p})
    behaviors = {a[i].meta.get("behavior_id") for i in ids}
    return {"before": a_run.run_id, "after": b_run.run_id, "before_model": a_run.model, "after_model": b_run.model,
            "split": split, "behaviors": len(behaviors), "cases": len(ids), "rows": rows,
            "control": _control(store, a_run.run_id, b_run.run_id)}


def _control(store: "ResultStore", before: str, after: str) -> dict[str, Any] | None:
    """Over-refusal on the XSTest safe prompts both runs sent (a model that refuses everything has ASR 0)."""
    from alignkit.evals.metrics import compare_paired

    a = {r.item_id: r for r in store.records(before, "redteam/control")}
    b = {r.item_id: r for r in store.records(after, "redteam/control")}
    ids = sorted(a.keys() & b.keys())
    if not ids:
        return None
    comp = compare_paired("over_refusal", [a[i].scores["refusal"] for i in ids], [b[i].scores["refusal"] for i in ids],
                          higher_is_better=False)
    return {"n": len(ids), "before": comp.a, "after": comp.b, "delta": comp.delta, "p": comp.p}


def format_comparison(result: dict[str, Any]) -> str:
    """A markdown table: family, ASR before and after with 95% CIs, delta, McNemar p."""
    def ci(x: tuple[float, float]) -> str:
        return "" if math.isnan(x[0]) else f" [{x[0]:.2f}, {x[1]:.2f}]"

    lines = [f"before: {result['before']} ({result['before_model']})",
             f"after:  {result['after']} ({result['after_model']})",
             f"{result['cases']} paired attack cases on {result['behaviors']} behaviors"
             + (f" (held out by {result['split']})" if result["split"] else ""), "",
             "| family | n | ASR before | ASR after | change | p | complied before | complied after | change | p |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['group']} | {r['n']} | {r['before']:.3f}{ci(r['before_ci'])} | {r['after']:.3f}"
                     f"{ci(r['after_ci'])} | {r['delta']:+.3f} | {r['p']:.3f} | {r['complied_before']:.3f} | "
                     f"{r['complied_after']:.3f} | {r['complied_delta']:+.3f} | {r['complied_p']:.3f} |")
    lines += ["", "ASR: the judge's harm rubric; complied: not refused (the judge's refusal rubric); p: McNemar's "
                  "exact test on the paired cases."]
    c = result.get("control")
    if c:
        lines.append(f"control: XSTest safe prompts refused {c['before']:.3f} before, {c['after']:.3f} after "
                     f"(n={c['n']}, change {c['delta']:+.3f}, p={c['p']:.3f})")
    return "\n".join(lines)
