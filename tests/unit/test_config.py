"""Config loader: YAML + overrides -> typed dataclasses, with errors that name key, file and fix."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from alignkit.config import describe, from_dict, load_config, save_config, to_dict
from alignkit.errors import ConfigError


@dataclass(frozen=True)
class Optim:
    lr: float = field(default=1e-5, metadata={"help": "Peak learning rate."})
    warmup_steps: int = 0
    max_steps: int = 100
    schedule: Literal["cosine", "constant"] = "cosine"

    def validate(self) -> None:
        if self.warmup_steps >= self.max_steps:
            raise ValueError(f"warmup_steps must be < max_steps ({self.max_steps}), got {self.warmup_steps}")


@dataclass(frozen=True)
class Lora:
    rank: int = field(default=8, metadata={"help": "Adapter rank."})
    alpha: float = 16
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    def __post_init__(self) -> None:
        if self.rank <= 0:
            raise ValueError(f"rank must be positive, got {self.rank}")


@dataclass(frozen=True)
class Model:
    name: str = "x"
    lora: Lora | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    cache_dir: Path | None = None


@dataclass(frozen=True)
class Data:
    train: str = "train.jsonl"
    max_length_tokens: int = 512
    weights: dict[str, float] = field(default_factory=dict)
    shape: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class Top:
    model: Model = field(default_factory=Model)
    optim: Optim = field(default_factory=Optim)
    data: Data = field(default_factory=Data)
    seed: int = 0
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    packing: bool = False


@dataclass(frozen=True)
class Needs:
    run_name: str
    steps: int = 1


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ----------------------------------------------------------------------------- loading and overrides


def test_defaults_without_file() -> None:
    assert load_config(Top) == Top()


def test_yaml_and_overrides_at_depth(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  name: gpt2\noptim:\n  lr: 2e-5\n  warmup_steps: 10\nseed: 3\n")
    cfg = load_config(Top, path, ["optim.lr=1e-4", "loss=ipo", "data.train=x.jsonl", "packing=true"])
    assert cfg.model.name == "gpt2"
    assert cfg.optim == Optim(lr=1e-4, warmup_steps=10)
    assert isinstance(cfg.optim.lr, float)
    assert (cfg.seed, cfg.loss, cfg.data.train, cfg.packing) == (3, "ipo", "x.jsonl", True)


def test_override_enables_optional_section() -> None:
    cfg = load_config(Top, None, ["model.lora.rank=4"])
    assert cfg.model.lora == Lora(rank=4)
    assert cfg.model.name == "x"


def test_override_enables_section_that_file_sets_null(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  lora: null\n")
    assert load_config(Top, path).model.lora is None
    assert load_config(Top, path, ["model.lora.alpha=32"]).model.lora == Lora(alpha=32.0)


def test_override_disables_section_and_sets_lists(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  lora:\n    rank: 16\n")
    assert load_config(Top, path, ["model.lora=null"]).model.lora is None
    cfg = load_config(Top, path, ["model.lora.target_modules=[a, b, c]"])
    assert cfg.model.lora == Lora(rank=16, target_modules=["a", "b", "c"])


def test_override_fixes_bad_file_value(tmp_path: Path) -> None:
    path = write(tmp_path, "optim:\n  lr: fast\n")
    assert load_config(Top, path, ["optim.lr=3e-4"]).optim.lr == 3e-4


def test_yaml_aliases_are_not_shared_by_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  weights: &w {a: 1.0}\nmodel:\n  lora: {}\n")
    cfg = load_config(Top, path, ["data.weights.a=2.0"])
    assert cfg.data.weights == {"a": 2.0}


# ------------------------------------------------------------------------------ types and coercion


def test_int_to_float_and_exponent_string_to_float(tmp_path: Path) -> None:
    path = write(tmp_path, "optim:\n  lr: 1e-5\nmodel:\n  lora:\n    alpha: 32\n")
    cfg = load_config(Top, path)
    assert cfg.optim.lr == 1e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.model.lora is not None and cfg.model.lora.alpha == 32.0
    assert isinstance(cfg.model.lora.alpha, float)


def test_float_rejects_words() -> None:
    msg = error(load_config, Top, None, ["optim.lr=fast"])
    assert "optim.lr: expected a float, got 'fast' (str)" in msg
    assert "optim.lr=fast" in msg


def test_float_rejects_bool_and_list() -> None:
    assert "optim.lr: expected a float, got True (bool)" in error(from_dict, Top, {"optim": {"lr": True}})
    assert "optim.lr: expected a float, got [1] (list)" in error(from_dict, Top, {"optim": {"lr": [1]}})


def test_int_rejects_float_and_bool() -> None:
    assert "seed: expected an int, got 1.5 (float)" in error(from_dict, Top, {"seed": 1.5})
    assert "seed: expected an int, got True (bool)" in error(from_dict, Top, {"seed": True})


def test_bool_is_strict(tmp_path: Path) -> None:
    assert from_dict(Top, {"packing": True}).packing is True
    assert load_config(Top, None, ["packing=false"]).packing is False
    assert "packing: expected a bool" in error(from_dict, Top, {"packing": "true"})
    assert "packing: expected a bool" in error(from_dict, Top, {"packing": 1})


def test_str_rejects_number_with_hint() -> None:
    msg = error(load_config, Top, None, ["model.name=123"])
    assert "model.name: expected a string, got 123 (int)" in msg and "quote" in msg


def test_literal_lists_allowed_values(tmp_path: Path) -> None:
    path = write(tmp_path, "optim:\n  schedule: linear\n")
    msg = error(load_config, Top, path)
    assert "optim.schedule: expected one of 'cosine', 'constant', got 'linear' (str)" in msg
    assert str(path) in msg


def test_list_types() -> None:
    cfg = from_dict(Top, {"model": {"lora": {"target_modules": ["q", "k"]}}})
    assert cfg.model.lora is not None and cfg.model.lora.target_modules == ["q", "k"]
    assert "model.lora.target_modules: expected list[str], got 'q' (str)" in error(
        from_dict, Top, {"model": {"lora": {"target_modules": "q"}}})
    assert "model.lora.target_modules[1]: expected a string, got 3 (int)" in error(
        from_dict, Top, {"model": {"lora": {"target_modules": ["q", 3]}}})


def test_tuple_dict_and_path_types() -> None:
    cfg = from_dict(Top, {"data": {"shape": [3, 4, 5], "weights": {"a": 1, "b": "2e-1"}},
                          "model": {"cache_dir": "/tmp/c"}})
    assert cfg.data.shape == (3, 4, 5)
    assert cfg.data.weights == {"a": 1.0, "b": 0.2}
    assert cfg.model.cache_dir == Path("/tmp/c")
    assert "data.weights.b: expected a float" in error(from_dict, Top, {"data": {"weights": {"b": "x"}}})
    assert "data.shape[0]: expected an int" in error(from_dict, Top, {"data": {"shape": ["a"]}})


def test_null_for_non_optional_is_an_error() -> None:
    assert "optim: expected a mapping (section Optim), got null" in error(from_dict, Top, {"optim": None})
    assert "seed: expected an int, got null" in error(load_config, Top, None, ["seed=null"])


def test_section_must_be_a_mapping() -> None:
    assert "optim: expected a mapping (section Optim), got 3 (int)" in error(from_dict, Top, {"optim": 3})


# --------------------------------------------------------------------------------- unknown keys


def test_unknown_key_suggests_close_match_and_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "optim:\n  lr: 1e-5\n  warmup_step: 5\n")
    msg = error(load_config, Top, path)
    assert f"unknown key 'optim.warmup_step' in {path}; did you mean 'optim.warmup_steps'?" in msg


def test_unknown_key_in_override_names_the_override() -> None:
    msg = error(load_config, Top, None, ["model.lora.rnak=4"])
    assert "unknown key 'model.lora.rnak' in override 'model.lora.rnak=4'" in msg
    assert "did you mean 'model.lora.rank'?" in msg


def test_unknown_top_level_key_found_in_a_section() -> None:
    msg = error(load_config, Top, None, ["warmup_steps=3"])
    assert "unknown key 'warmup_steps'" in msg and "did you mean 'optim.warmup_steps'?" in msg


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  zzzz: 1\n")
    msg = error(load_config, Top, path)
    assert "unknown key 'data.zzzz'" in msg and str(path) in msg
    assert "valid keys: data.train, data.max_length_tokens, data.weights, data.shape" in msg


def test_unknown_section_key(tmp_path: Path) -> None:
    msg = error(load_config, Top, None, ["optimm.lr=1"])
    assert "unknown key 'optimm'" in msg and "did you mean 'optim'?" in msg


# ------------------------------------------------------------------------------ other errors


def test_override_without_equals() -> None:
    msg = error(load_config, Top, None, ["optim.lr"])
    assert "override 'optim.lr' is not key=value" in msg
    assert "not key=value" in error(load_config, Top, None, ["=3"])


def test_override_into_scalar_is_an_error() -> None:
    msg = error(load_config, Top, None, ["seed=3", "seed.x=1"])
    assert "override 'seed.x=1'" in msg and "'seed' is 3 (int), not a section" in msg


def test_missing_required_fields() -> None:
    msg = error(from_dict, Needs, {"steps": 2}, where="needs.yaml")
    assert "needs.yaml" in msg and "missing required key(s) 'run_name'" in msg
    assert from_dict(Needs, {"run_name": "a"}) == Needs("a")


def test_validate_hook_prefixes_section(tmp_path: Path) -> None:
    path = write(tmp_path, "optim:\n  warmup_steps: 200\n")
    msg = error(load_config, Top, path)
    assert "optim: warmup_steps must be < max_steps (100), got 200" in msg and str(path) in msg


def test_validate_error_from_override_names_it(tmp_path: Path) -> None:
    msg = error(load_config, Top, None, ["optim.warmup_steps=500"])
    assert "override 'optim.warmup_steps=500'" in msg and "optim: warmup_steps must be" in msg


CALLS: list[str] = []


@dataclass
class Inner:
    def validate(self) -> None:
        CALLS.append("inner")


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)

    def validate(self) -> None:
        CALLS.append("outer")


def test_validate_runs_inner_sections_first() -> None:
    CALLS.clear()
    from_dict(Outer, {"inner": {}})
    from_dict(Outer, {})  # default sections are validated too
    assert CALLS == ["inner", "outer", "inner", "outer"]


def test_post_init_value_error_becomes_config_error() -> None:
    msg = error(load_config, Top, None, ["model.lora.rank=0"])
    assert "model.lora: rank must be positive, got 0" in msg


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\noptim:\n  lr: [1, 2\n")
    msg = error(load_config, Top, path)
    assert f"{path}:" in msg and "invalid YAML" in msg
    assert msg.split(f"{path}:")[1].split(":")[0].isdigit()


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\nseed: 2\n")
    msg = error(load_config, Top, path)
    assert f"{path}:2:" in msg and "duplicate key 'seed'" in msg


def test_merge_keys_still_work(tmp_path: Path) -> None:
    path = write(tmp_path, "base: &b {lr: 1e-3, warmup_steps: 1}\n")
    text = "optim:\n  <<: {lr: 1e-3, warmup_steps: 1}\n  lr: 2e-3\n"
    assert load_config(Top, write(tmp_path, text, "m.yaml")).optim == Optim(lr=2e-3, warmup_steps=1)
    assert "unknown key 'base'" in error(load_config, Top, path)


def test_file_not_found(tmp_path: Path) -> None:
    msg = error(load_config, Top, tmp_path / "nope.yaml")
    assert "not found" in msg and "nope.yaml" in msg


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- a\n- b\n")
    msg = error(load_config, Top, path)
    assert str(path) in msg and "mapping" in msg


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(Top, write(tmp_path, "")) == Top()


# ---------------------------------------------------------------------------- save, dict, describe


def test_round_trip_and_atomic_save(tmp_path: Path) -> None:
    cfg = load_config(Top, None, ["model.lora.rank=4", "model.cache_dir=/tmp/x", "data.shape=[7]",
                                  "data.weights={a: 0.5}", "optim.lr=3e-6", "loss=ipo"])
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, out)
    assert load_config(Top, out) == cfg
    assert sorted(os.listdir(out.parent)) == ["config.yaml"]
    save_config(Top(), out)  # overwrite in place
    assert load_config(Top, out) == Top()
    assert sorted(os.listdir(out.parent)) == ["config.yaml"]


def test_failed_save_leaves_no_temp_file(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        save_config(object(), tmp_path / "c.yaml")

    @dataclass
    class Bad:
        thing: object = field(default_factory=object)

    with pytest.raises(Exception):
        save_config(Bad(), tmp_path / "c.yaml")
    assert os.listdir(tmp_path) == []


def test_failed_replace_removes_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "config.yaml"
    save_config(Top(), out)

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        save_config(Top(seed=5), out)
    assert os.listdir(tmp_path) == ["config.yaml"]
    assert load_config(Top, out) == Top()  # the old file is intact


def test_to_dict_is_plain() -> None:
    cfg = from_dict(Top, {"model": {"cache_dir": "/c", "lora": {}}})
    d = to_dict(cfg)
    assert d["model"]["cache_dir"] == "/c"
    assert d["data"]["shape"] == [1, 2]
    assert d["model"]["lora"] == {"rank": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}
    assert list(d) == ["model", "optim", "data", "seed", "loss", "packing"]


def test_describe_lists_keys_types_defaults_and_help() -> None:
    text = describe(Top)
    lines = {line.split()[0]: line for line in text.splitlines()}
    assert "optim.lr" in lines and "float = 1e-05" in lines["optim.lr"]
    assert "Peak learning rate." in lines["optim.lr"]
    assert "model.lora.rank" in lines and "Adapter rank." in lines["model.lora.rank"]
    assert '"cosine" | "constant"' in lines["optim.schedule"]
    assert "Lora | None = null" in lines["model.lora"]
    assert "(required)" in describe(Needs)


def test_config_module_does_not_import_torch() -> None:
    code = "import sys, alignkit.config; print('torch' in sys.modules or 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
