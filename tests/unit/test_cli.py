"""The command line: help without torch, clear config errors, a tiny training run end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from alignkit.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignkit.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [[], ["train"], ["chat"], ["config"], ["run"]])
def test_every_help_has_an_example_and_imports_no_torch(args):
    code = ("import sys; from alignkit.cli import main\n"
            "try: main([*sys.argv[1:], '--help'])\n"
            "except SystemExit: pass\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "example" in out.stdout and "alignkit" in out.stdout


def test_unknown_key_names_it_and_suggests(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  lr: 1.0e-4\n  warmup_ration: 0.1\n", encoding="utf-8")
    assert main(["train", "dpo", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "optim.warmup_ration" in err and "optim.warmup_ratio" in err and "r.yaml" in err


def test_bad_override_value_is_a_clear_error(capsys):
    assert main(["train", "dpo", "beta=strong", "data.train=x.jsonl"]) == 2
    assert "beta" in capsys.readouterr().err


def test_config_lists_keys(capsys):
    assert main(["config", "dpo"]) == 0
    out = capsys.readouterr().out
    assert "pairs_per_step" in out and "model.lora.rank" in out and "optim.lr" in out


def test_train_dpo_from_the_command_line_writes_a_run_directory(tmp_path, pref_file, capsys):
    out_dir = tmp_path / "run"
    code = main(["train", "dpo", "--config", "recipes/dpo-tiny.yaml", f"data.train={pref_file}",
                 f"data.eval={pref_file}", f"run.output_dir={out_dir}", "run.max_steps=2", "run.progress=false",
                 "data.limit=null"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "before" in printed
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["steps"] == 2 and "accuracy" in summary["after"]
    assert "beta: 0.1" in (out_dir / "config.yaml").read_text()
    assert len((out_dir / "metrics.jsonl").read_text().splitlines()) == 2
