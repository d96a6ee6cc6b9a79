"""`alignkit redteam` on the tiny random model: run, resume, export, compare, report, list, help, errors."""

from __future__ import annotations

import json

import pytest
from test_redteam_support import make_data_dir

from alignkit.cli import main


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = make_data_dir(tmp_path / "bench")
    return ["--data-dir", str(data), "--db", str(tmp_path / "rt.db"), "--output-dir", str(tmp_path / "out")]


def test_run_export_compare_report_from_the_command_line(env, tmp_path, capsys) -> None:
    run = ["redteam", "--target", "tiny-random-llama", "--judge", "rules", "--families", "direct,obfuscation",
           "--limit", "2", "--seed", "0", "--max-new-tokens", "8", "--no-progress", *env]
    assert main(run) == 0
    out = capsys.readouterr().out
    assert "by family" in out and "obfuscation" in out and "judge rules: harm accuracy" in out
    run_id = out.split("\nrun ")[1].split(":")[0]
    assert main(run) == 0  # same command: resumes, computes nothing
    assert "resumed, 0 cases run" in capsys.readouterr().out
    db = env[env.index("--db") + 1]
    assert main(["redteam", "export", run_id, "-o", str(tmp_path / "exp"), "--all-attacks", "--db", db]) == 0
    assert "train:" in capsys.readouterr().out
    split = json.loads((tmp_path / "exp" / "split.json").read_text())
    assert len(split["heldout_behaviors"]) == 1 and len(split["train_behaviors"]) == 1
    assert main(["redteam", "compare", run_id, run_id, "--split", str(tmp_path / "exp" / "split.json"),
                 "--db", db]) == 0
    assert "| all | 7 |" in capsys.readouterr().out  # 1 held-out behavior x 7 attacks, paired with itself
    assert main(["redteam", "report", run_id, "-o", str(tmp_path / "r.html"), "--db", db]) == 0
    assert "ASR by attack family" in (tmp_path / "r.html").read_text()


def test_list_help_and_errors(capsys) -> None:
    assert main(["redteam", "list"]) == 0
    listed = capsys.readouterr().out
    assert "pair/search" in listed and "obfuscation/pig_latin" in listed and "jailbreak/hypothetical/" in listed
    assert main(["redteam", "list", "--keys"]) == 0
    assert "pair.iterations" in capsys.readouterr().out
    for argv in (["redteam", "--help"], ["redteam", "export", "--help"], ["redteam", "guard", "--help"],
                 ["redteam", "compare", "--help"], ["redteam", "report", "--help"], ["redteam", "list", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "examples:" in capsys.readouterr().out
    assert main(["redteam", "--families", "jailbrake", "--limit", "1"]) == 2
    assert "did you mean 'jailbreak'" in capsys.readouterr().err
    assert main(["redteam", "--set", "pair.iteratons=3"]) == 2
    assert "iteratons" in capsys.readouterr().err
