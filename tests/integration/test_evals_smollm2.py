"""Evals with the real SmolLM2-135M-Instruct and the shared benchmark data (a few minutes on 2 cores)."""

from __future__ import annotations

import pytest
import torch

from alignkit.evals.loglik import LoglikRequest, LoglikScorer, encode_pair
from alignkit.evals.registry import get_task
from alignkit.evals.runner import EvalConfig, run_eval
from alignkit.evals.subject import Subject
from alignkit.evals.task import EvalContext, select_items
from alignkit.report import build_report
from alignkit.store import ResultStore

EXPECTED_ITEMS = {"truthfulqa_mc": 817, "arc_easy": 2376, "arc_challenge": 1172, "piqa": 1838, "hellaswag": 1000,
                  "mmlu": 14042, "boolq": 3270, "openbookqa": 500, "winogrande": 1267, "gsm8k": 1319, "bbq": 11956,
                  "winobias": 792, "harmbench": 240, "advbench": 520, "xstest": 450, "refusal_quality": 41}


def test_every_benchmark_loads_the_shared_data(benchmarks):
    ctx = EvalContext(data_dir=benchmarks)
    for name, count in EXPECTED_ITEMS.items():
        items = get_task(name).load(ctx)
        assert len(items) == count, name
        assert len({i.id for i in items}) == count, f"{name}: item ids must be unique (resume keys)"


def test_packed_scores_equal_one_forward_per_choice_on_the_real_model(smollm2, benchmarks):
    model, tok = smollm2.model, smollm2.tokenizer
    items = select_items(get_task("truthfulqa_mc").load(EvalContext(data_dir=benchmarks)), 2, seed=0)
    reqs = [LoglikRequest(i.prompt, tuple(" " + c for c in i.choices[:3])) for i in items]
    packed = LoglikScorer(model, tok).score(reqs)
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    for req, res in zip(reqs, packed):
        for cont, got in zip(req.continuations, res.logprobs):
            ctx, ids = encode_pair(tok, req.context, cont, prefix)
            with torch.no_grad():
                lp = model(torch.tensor([ctx + ids])).logits[0].float().log_softmax(-1)
            want = sum(lp[len(ctx) - 1 + j, t].item() for j, t in enumerate(ids))
            assert got == pytest.approx(want, abs=2e-3)


def test_quick_suite_end_to_end_with_resume_and_report(smollm2, benchmarks, tmp_path):
    subject = Subject.from_model(smollm2.model, smollm2.tokenizer, name="smollm2-135m-instruct")
    cfg = EvalConfig(model="smollm2-135m-instruct", suite=["truthfulqa_mc", "arc_easy", "xstest", "bbq", "winobias"],
                     limit=8, data_dir=str(benchmarks), db=str(tmp_path / "r.db"), output_dir=str(tmp_path / "evals"),
                     max_new_tokens=32, judge="rules", progress=False)
    first = run_eval(cfg, subject=subject)
    assert first.computed_items == 5 * 8
    m = first.metrics
    assert 0.2 <= m["arc_easy"]["acc"].value <= 1.0 and m["arc_easy"]["acc"].n == 8
    assert 0.0 < m["truthfulqa_mc"]["mc2"].value < 1.0
    assert {"over_refusal", "refusal_unsafe"} <= set(m["xstest"]) or "refusal" in m["xstest"]
    assert "gap_type1" in m["winobias"] or "gap_type2" in m["winobias"]
    again = run_eval(cfg, subject=subject)
    assert again.resumed and again.computed_items == 0
    with ResultStore(cfg.db) as store:
        html = build_report(store, [first.run_id], tmp_path / "report.html").read_text()
    assert "truthfulqa_mc" in html and "<svg" in html
