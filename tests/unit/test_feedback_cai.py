"""CAI SL stage, context distillation, the label and audit runners, their CLI, resume and failure behaviour,
and that the outputs train with the DPO trainer as they are."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from alignkit.cli import main
from alignkit.config import from_dict
from alignkit.data.load import load_conversations, load_preferences
from alignkit.errors import AlignkitError, ConfigError
from alignkit.feedback import cai as cai_mod
from alignkit.feedback import label as label_mod
from alignkit.feedback.audit import run_audit
from alignkit.feedback.cai import clean_revision, draw_principles, run_distill, run_sl
from alignkit.feedback.constitution import default_constitution
from alignkit.feedback.label import run_label
from alignkit.feedback.settings import AuditConfig, CAIConfig, DistillConfig, LabelConfig
from tests.unit.conftest import tiny_base
from tests.unit.test_feedback_judge import ScriptedGenerator


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Explain how to do bad thing {i}"}) + "\n" for i in range(5)))
    return path


def _cai(tmp_path: Path, prompt_file: Path, **kw: object) -> CAIConfig:
    data = {"prompts": str(prompt_file), "output_dir": str(tmp_path / "cai"), "rounds": 2, "chunk_prompts": 2,
            "progress": False, "limit": None, **kw}
    return from_dict(CAIConfig, data)


def test_draw_principles_fresh_each_round_and_clean_revision() -> None:
    import random

    pool = default_constitution().principles
    drawn = draw_principles(pool, 4, random.Random(0))
    assert len({p.id for p in drawn}) == 4
    assert len(draw_principles(pool[:2], 5, random.Random(0))) == 5  # cycles once the pool is used up
    assert clean_revision('Revised response: "Here it is."') == "Here it is."
    assert clean_revision("**Rewritten response:** I can't help with that.") == "I can't help with that."
    assert clean_revision("A normal answer: yes.") == "A normal answer: yes."
    assert clean_revision("Here's a rewritten version of the assistant's response:\n\n\"No.\"") == "No."
    assert clean_revision("Here is how to bake: mix flour.") == "Here is how to bake: mix flour."


def test_sl_stage_records_principles_and_writes_trainer_formats(tmp_path, prompt_file, monkeypatch) -> None:
    gen = ScriptedGenerator()
    monkeypatch.setattr(cai_mod, "_build", lambda *a, **k: gen)
    summary = run_sl(_cai(tmp_path, prompt_file))
    out = tmp_path / "cai"
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 5 and summary["preference_pairs"] == 5 and summary["sft_rows"] == 5
    rec = records[0]
    assert rec["initial"].startswith("Sure, here is how")
    assert [r["round"] for r in rec["rounds"]] == [1, 2]
    assert rec["principles"] == [r["principle"] for r in rec["rounds"]] and len(set(rec["principles"])) == 2
    c = default_constitution()
    assert rec["rounds"][0]["critique_request"] == c.principle(rec["principles"][0]).critique
    assert rec["final"] == rec["rounds"][-1]["revision"] == "a safe reply, version 2"  # preface and quotes stripped
    # round 2 critiques round 1's revision, not the initial response
    round2 = [chat for chat in gen.seen if len(chat) == 3 and chat[1]["content"] == "a safe reply, version 2"]
    assert round2
    prefs = load_preferences(out / "prefs.jsonl").records
    assert prefs[0].chosen[0].content == rec["final"] and prefs[0].rejected[0].content == rec["initial"]
    convs = load_conversations(out / "sft.jsonl").records
    assert convs[0].messages[-1].content == rec["final"] and convs[0].messages[0].role == "user"
    assert json.loads((out / "summary.json").read_text())["rounds"] == 2


class _Failing(ScriptedGenerator):
    def __init__(self, fail_after: int) -> None:
        super().__init__()
        self.fail_after = fail_after

    def generate(self, chats, params=None):  # type: ignore[override]
        if self.calls["generate"] >= self.fail_after:
            raise AlignkitError("backend went away")
        return super().generate(chats, params) if params else super().generate(chats)


def test_sl_resumes_and_never_leaves_half_outputs(tmp_path, prompt_file, monkeypatch) -> None:
    failing = _Failing(fail_after=5)  # chunk 1 needs 1 + 2 rounds x 2 = 5 calls; chunk 2 dies
    monkeypatch.setattr(cai_mod, "_build", lambda *a, **k: failing)
    with pytest.raises(AlignkitError, match="went away"):
        run_sl(_cai(tmp_path, prompt_file))
    out = tmp_path / "cai"
    assert not (out / "records.jsonl").exists() and not (out / "prefs.jsonl").exists()
    fresh = ScriptedGenerator()
    monkeypatch.setattr(cai_mod, "_build", lambda *a, **k: fresh)
    summary = run_sl(_cai(tmp_path, prompt_file))
    assert summary["generated_this_run"] == 3 and summary["prompts"] == 5
    assert len([s for s in fresh.seen if len(s) == 1]) == 3  # only the 3 unfinished prompts were generated
    with pytest.raises(ConfigError, match="different settings"):
        run_sl(_cai(tmp_path, prompt_file, rounds=3))
    assert run_sl(_cai(tmp_path, prompt_file, rounds=3, fresh=True))["rounds"] == 3


def test_bad_constitution_fails_before_any_model(tmp_path, prompt_file, monkeypatch) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: '1'\npreamble: p\nhazards: []\nprinciples: []\n")
    monkeypatch.setattr(cai_mod, "_build", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(ConfigError, match=r"bad\.yaml:4: hazards is empty"):
        run_sl(_cai(tmp_path, prompt_file, constitution=str(bad)))


def test_context_distillation_drops_the_system_prompt(tmp_path, prompt_file, monkeypatch) -> None:
    gen = ScriptedGenerator()
    monkeypatch.setattr(cai_mod, "_build", lambda *a, **k: gen)
    cfg = from_dict(DistillConfig, {"prompts": str(prompt_file), "output_dir": str(tmp_path / "d"), "progress": False})
    summary = run_distill(cfg)
    system = default_constitution().system_prompt()
    assert any(chat[0] == {"role": "system", "content": system} for chat in gen.seen)
    convs = load_conversations(tmp_path / "d" / "sft.jsonl").records
    assert summary["sft_rows"] == 5 and all(m.role != "system" for c in convs for m in c.messages)
    assert convs[0].messages[-1].content.startswith("A safe answer")
    prefs = load_preferences(tmp_path / "d" / "prefs.jsonl").records
    assert prefs[0].rejected[0].content.startswith("Sure, here is how")


def _pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}],
             "chosen": [{"role": "assistant", "content": "sure thing" if i % 2 else "a safe reply"}],
             "rejected": [{"role": "assistant", "content": "a safe reply" if i % 2 else "sure thing"}]} for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_label_runner_pairs_and_samples(tmp_path, prompt_file, monkeypatch) -> None:
    monkeypatch.setattr(label_mod, "make_generator", lambda *a, **k: ScriptedGenerator(bias=0.4))
    cfg = from_dict(LabelConfig, {"pairs": str(_pairs_file(tmp_path)), "output": str(tmp_path / "l" / "out.jsonl"),
                                  "progress": False, "chunk_items": 4})
    s = run_label(cfg)
    assert (s["records"], s["flipped_vs_source"], s["position_consistency"]) == (6, 3, 1.0)
    labeled = load_preferences(tmp_path / "l" / "out.jsonl").records
    assert all(p.chosen[0].content == "a safe reply" for p in labeled)
    assert (tmp_path / "l" / "out.summary.json").is_file()
    cfg = from_dict(LabelConfig, {"prompts": str(prompt_file), "policy": "p", "output": str(tmp_path / "s.jsonl"),
                                  "samples_per_prompt": 3, "pair_mode": "all", "progress": False})
    s = run_label(cfg)  # the scripted policy's 3 samples are equally good: no preference survives
    assert s["items"] == 5 and s["records"] == 0 and s["judged"] == 15


def test_label_config_validation() -> None:
    with pytest.raises(ConfigError, match="exactly one of pairs"):
        from_dict(LabelConfig, {})
    with pytest.raises(ConfigError, match="needs policy"):
        from_dict(LabelConfig, {"prompts": "advbench"})
    with pytest.raises(ConfigError, match="unknown key 'judge.modle'"):
        from_dict(LabelConfig, {"pairs": "x", "judge": {"modle": "y"}})


def test_unreachable_judge_endpoint_fails_clearly_and_writes_nothing(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = from_dict(LabelConfig, {"pairs": str(_pairs_file(tmp_path)), "output": str(tmp_path / "o.jsonl"),
                                  "judge": {"model": f"openai:http://127.0.0.1:{port}/v1::judge"}, "progress": False})
    with pytest.raises(AlignkitError, match=rf"cannot reach http://127.0.0.1:{port}/v1/chat/completions"):
        run_label(cfg)
    assert not (tmp_path / "o.jsonl").exists()


def test_audit_runner_detects_position_bias(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(label_mod, "make_generator", lambda *a, **k: ScriptedGenerator(bias=8.0))
    cfg = from_dict(AuditConfig, {"output": str(tmp_path / "audit.json"), "progress": False, "limit": 12})
    report = run_audit(cfg)
    assert report["pairs"] == 12 and report["position"]["first_position_rate"]["value"] == 1.0
    assert report["position"]["flip_rate"]["value"] == 1.0
    assert report["agreement"]["value"] == pytest.approx(0.5, abs=0.25)
    assert "self_preference" in report and json.loads((tmp_path / "audit.json").read_text())["pairs"] == 12


def test_cli_label_and_audit_with_a_real_tiny_model(tmp_path, capsys) -> None:
    out = tmp_path / "cli.jsonl"
    rc = main(["label", f"pairs={_pairs_file(tmp_path)}", "judge.model=tiny-random-llama", f"output={out}",
               "limit=3", "progress=false", "min_confidence=0.5"])
    text = capsys.readouterr().out
    assert rc == 0 and "label: 3 pairs" in text and out.is_file()
    rc = main(["judge", "audit", "judge.model=tiny-random-llama", "limit=4", "self_max_new_tokens=4",
               f"output={tmp_path / 'a.json'}", "progress=false"])
    text = capsys.readouterr().out
    assert rc == 0 and "position: flip rate on swap" in text and "length: judge prefers longer" in text
    assert main(["cai", "sl", "rouds=3"]) == 2
    assert "did you mean 'rounds'" in capsys.readouterr().err


def test_cli_help_has_examples(capsys) -> None:
    for argv in (["cai", "--help"], ["cai", "sl", "--help"], ["label", "--help"], ["judge", "audit", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "examples:" in capsys.readouterr().out


def test_cai_preferences_train_with_dpo_as_they_are(tmp_path, prompt_file, monkeypatch) -> None:
    from alignkit.train.dpo import DPOConfig, train

    monkeypatch.setattr(cai_mod, "_build", lambda *a, **k: ScriptedGenerator())
    run_sl(_cai(tmp_path, prompt_file, rounds=1))
    cfg = from_dict(DPOConfig, tiny_base(tmp_path / "dpo", tmp_path / "cai" / "prefs.jsonl", pairs_per_step=4,
                                         pairs_per_micro_batch=2, sample_prompts=0, run__max_steps=2))
    summary = train(cfg)
    assert summary["steps"] == 2
