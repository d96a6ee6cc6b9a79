"""`alignkit run`: recipe validation, references, caching / resume, and safety gates (fake stage kinds, no models)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from alignkit.errors import ConfigError
from alignkit.pipeline import recipe as recipe_mod
from alignkit.pipeline.recipe import Gate, load_recipe, parse_recipe, resolve_refs
from alignkit.pipeline.report import HeadlineRow, check_gates, format_headline, rows_from_json
from alignkit.pipeline.runner import GateFailure, describe_plan, run_pipeline
from alignkit.pipeline.stages import STAGE_KINDS, StageKind

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_kinds(monkeypatch):
    """Two fake kinds: `make` writes a file from `text`, `upper` reads a file and writes it upper-cased."""
    calls: list[str] = []

    def make(params, ctx):
        calls.append(ctx.name)
        if params.get("fail"):
            raise RuntimeError("boom")
        out = ctx.dir / "out.txt"
        out.write_text(str(params["text"]))
        return {"file": str(out), "n": len(str(params["text"]))}

    def upper(params, ctx):
        calls.append(ctx.name)
        out = ctx.dir / "upper.txt"
        out.write_text(Path(params["src"]).read_text().upper())
        return {"file": str(out)}

    monkeypatch.setitem(STAGE_KINDS, "make", StageKind(make, ("file", "n"), lambda: {"text", "fail"}))
    monkeypatch.setitem(STAGE_KINDS, "upper", StageKind(upper, ("file",), lambda: {"src"}))
    return calls


def _recipe(tmp_path: Path, stages: list[dict], **extra) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "output_dir": str(tmp_path / "out"), "stages": stages, **extra}))
    return path


def test_references_resolve_and_keep_types():
    scope = {"model": "m", "a": {"file": "/x/y", "n": 3}}
    assert resolve_refs({"k": "${a.n}", "s": "dir=${a.file}", "l": ["${model}"]}, scope) == \
        {"k": 3, "s": "dir=/x/y", "l": ["m"]}


def test_recipe_errors_name_the_file_stage_and_field(tmp_path, fake_kinds):
    bad = [
        ([{"name": "a", "kind": "nope"}], "stage 'a': kind must be one of"),
        ([{"name": "a", "kind": "make", "txt": 1}], "stage 'a': unknown key 'txt'; did you mean 'text'"),
        ([{"name": "a", "kind": "upper", "src": "${b.file}"}], "refers to 'b', which is not an earlier stage"),
        ([{"name": "a", "kind": "make", "text": "x"}, {"name": "b", "kind": "upper", "src": "${a.path}"}],
         "a make stage's outputs are file, n"),
        ([{"name": "a", "kind": "make", "text": "x"}, {"name": "a", "kind": "make", "text": "y"}], "used twice"),
        ([{"name": "b", "kind": "upper", "like": "a"}], "like: 'a' is not an earlier stage"),
        ([{"kind": "make"}], "stage 1: 'name' must be an identifier"),
    ]
    for stages, message in bad:
        path = _recipe(tmp_path, stages)
        with pytest.raises(ConfigError) as err:
            load_recipe(path)
        assert str(err.value).startswith(str(path) + ": ") and message in str(err.value), str(err.value)
    with pytest.raises(ConfigError, match=r"gates\[0\]: gate on x sets none"):
        load_recipe(_recipe(tmp_path, [{"name": "a", "kind": "make", "text": "x"}], gates=[{"metric": "x"}]))
    with pytest.raises(ConfigError, match="unknown key"):
        parse_recipe({"name": "t", "output_dir": "o", "stages": [], "stagez": []})


def test_like_copies_settings_and_overrides_address_stages_by_name(tmp_path, fake_kinds):
    path = _recipe(tmp_path, [{"name": "a", "kind": "make", "text": "x"}, {"name": "b", "like": "a"}])
    r = load_recipe(path, ["stages.b.text=changed", "output_dir=elsewhere"])
    assert r.stage("a").params == {"text": "x"} and r.stage("b").params == {"text": "changed"}
    assert r.stage("b").kind == "make" and r.output_dir == "elsewhere"
    with pytest.raises(ConfigError, match="has no stage 'c'"):
        load_recipe(path, ["stages.c.text=1"])


def test_unchanged_stages_are_cached_and_changes_propagate(tmp_path, fake_kinds):
    stages = [{"name": "a", "kind": "make", "text": "hello"}, {"name": "b", "kind": "upper", "src": "${a.file}"}]
    path = _recipe(tmp_path, stages)
    first = run_pipeline(load_recipe(path), progress=False)
    assert first.ran == ["a", "b"] and fake_kinds == ["a", "b"]
    assert Path(first.outputs["b"]["file"]).read_text() == "HELLO"
    second = run_pipeline(load_recipe(path), progress=False)
    assert second.ran == [] and second.cached == ["a", "b"] and fake_kinds == ["a", "b"]
    assert "cached" in describe_plan(load_recipe(path))
    # a changed setting upstream reruns that stage and everything that uses it
    third = run_pipeline(load_recipe(path, ["stages.a.text=bye"]), progress=False)
    assert third.ran == ["a", "b"] and Path(third.outputs["b"]["file"]).read_text() == "BYE"
    # --force reruns one stage; a deleted output file reruns its stage
    assert run_pipeline(load_recipe(path, ["stages.a.text=bye"]), force=["b"], progress=False).ran == ["b"]
    Path(third.outputs["b"]["file"]).unlink()
    assert run_pipeline(load_recipe(path, ["stages.a.text=bye"]), progress=False).ran == ["b"]


def test_a_changed_input_file_invalidates_the_stage(tmp_path, fake_kinds):
    src = tmp_path / "in.txt"
    src.write_text("abc")
    path = _recipe(tmp_path, [{"name": "u", "kind": "upper", "src": str(src)}])
    assert run_pipeline(load_recipe(path), progress=False).ran == ["u"]
    assert run_pipeline(load_recipe(path), progress=False).ran == []
    src.write_text("abd")
    out = run_pipeline(load_recipe(path), progress=False)
    assert out.ran == ["u"] and Path(out.outputs["u"]["file"]).read_text() == "ABD"


def test_a_failed_stage_is_recorded_and_the_rerun_resumes_after_the_cached_ones(tmp_path, fake_kinds):
    stages = [{"name": "a", "kind": "make", "text": "x"}, {"name": "b", "kind": "make", "text": "y", "fail": True}]
    path = _recipe(tmp_path, stages)
    with pytest.raises(RuntimeError, match="boom"):
        run_pipeline(load_recipe(path), progress=False)
    state = json.loads((tmp_path / "out" / ".pipeline" / "stages.json").read_text())
    assert [s["status"] for s in state["stages"]] == ["done", "failed"]
    assert "boom" in state["stages"][1]["error"]
    assert "will resume" in describe_plan(load_recipe(path, ["stages.b.fail=true"]))
    again = run_pipeline(load_recipe(path, ["stages.b.fail=false"]), progress=False)
    assert again.cached == ["a"] and again.ran == ["b"]


def _row(id_: str, before: float, after: float, p: float = 0.01) -> HeadlineRow:
    return HeadlineRow(id_, id_, before, math.nan, math.nan, after, math.nan, math.nan, after - before, p, 50,
                       "mcnemar", True)


def test_gates_check_bounds_and_drops():
    rows = [_row("xstest.over_refusal", 0.1, 0.4), _row("arc_easy.acc", 0.6, 0.45)]
    results = check_gates([Gate("xstest.over_refusal", max=0.3), Gate("arc_easy.acc", max_drop=0.1),
                           Gate("arc_easy.acc", min=0.4), Gate("missing.metric", max=1.0)], rows)
    assert [g.passed for g in results] == [False, False, True, False]
    assert "after 0.400 > max 0.3" in results[0].detail and "dropped 0.150" in results[1].detail
    assert "was not measured" in results[3].detail
    text = format_headline(rows, results)
    assert "gate FAIL: xstest.over_refusal <= 0.3" in text and "significant (p < 0.05" in text


def test_gate_failure_fails_the_pipeline_with_the_reason(tmp_path, monkeypatch, fake_kinds):
    def report(params, ctx):
        path = ctx.dir / "headline.json"
        path.write_text(json.dumps({"rows": [_row("xstest.over_refusal", 0.1, float(params["after"])).to_dict()]}))
        (ctx.dir / "r.html").write_text("<html></html>")
        return {"report": str(ctx.dir / "r.html"), "headline": str(path), "summary": str(path)}

    monkeypatch.setitem(STAGE_KINDS, "report", StageKind(report, ("report", "headline", "summary"), lambda: {"after"}))
    path = _recipe(tmp_path, [{"name": "r", "kind": "report", "after": 0.6}],
                   gates=[{"metric": "xstest.over_refusal", "max": 0.5}])
    with pytest.raises(GateFailure, match=r"xstest.over_refusal <= 0.5 \(after 0.600 > max 0.5\)"):
        run_pipeline(load_recipe(path), progress=False)
    # editing the gate needs no rerun of the (cached) report stage
    out = run_pipeline(load_recipe(path, ["gates=[{metric: xstest.over_refusal, max: 0.7}]"]), progress=False)
    assert out.ran == [] and out.gates[0]["passed"]


def test_headline_rows_round_trip_through_json(tmp_path):
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"rows": [_row("a.b", 0.5, 0.7).to_dict()]}))
    (row,) = rows_from_json(path)
    assert row.id == "a.b" and row.after == 0.7 and math.isnan(row.before_lo) and row.significant


@pytest.mark.parametrize("name", ["quickstart", "cai-dpo", "rlhf-ppo", "rlaif-grpo"])
def test_shipped_pipeline_recipes_parse(name):
    r = load_recipe(REPO / "recipes" / f"{name}.yaml")
    assert r.stages and r.stages[-1].kind == "report"
    assert recipe_mod.referenced_stages(r.stages[-1].params)


def test_launch_commands_for_cpu_gpus_and_accelerate_configs():
    from alignkit.pipeline.stages import launch_command

    cpu = launch_command("dpo", Path("c.yaml"), {"num_processes": 2, "cpu": True})
    assert cpu[1:4] == ["-m", "torch.distributed.run", "--nproc_per_node"] and cpu[-4:] == ["train", "dpo", "--config", "c.yaml"]
    gpu = launch_command("sft", Path("c.yaml"), {"num_processes": 4})
    assert "accelerate.commands.launch" in gpu and "--multi_gpu" in gpu and gpu[gpu.index("--num_processes") + 1] == "4"
    cfg = launch_command("dpo", Path("c.yaml"), {"num_processes": 8, "config_file": "configs/accelerate/fsdp.yaml"})
    assert cfg[cfg.index("--config_file") + 1] == "configs/accelerate/fsdp.yaml" and "--multi_gpu" not in cfg


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed-zero3"])
def test_shipped_accelerate_configs_are_valid_yaml(name):
    data = yaml.safe_load((REPO / "configs" / "accelerate" / f"{name}.yaml").read_text())
    assert data["distributed_type"] in ("MULTI_GPU", "FSDP", "DEEPSPEED") and data["mixed_precision"] == "no"
