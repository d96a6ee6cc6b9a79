"""The constitution: the shipped default is complete, and malformed files fail naming file, line and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alignkit.errors import ConfigError
from alignkit.feedback.constitution import (
    HAZARD_IDS,
    Constitution,
    UnknownIdError,
    default_constitution,
    default_constitution_path,
    load_constitution,
    parse_constitution,
)


def _default_data() -> dict:
    return yaml.safe_load(default_constitution_path().read_text(encoding="utf-8"))


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "constitution.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_default_covers_taxonomy_and_every_hazard_has_a_principle() -> None:
    c = default_constitution()
    assert isinstance(c, Constitution)
    assert c.hazard_ids == HAZARD_IDS
    assert [h.code for h in c.hazards] == [f"S{i}" for i in range(1, 15)]
    for hid in HAZARD_IDS:
        assert c.principles_for(hid), f"no principle covers {hid}"
    for p in c.principles:
        assert p.critique and p.revision and p.comparison and p.name
        assert p.comparison.rstrip().endswith("?"), p.id
    # helpful/honest principles exist and the non-evasive one covers every hazard
    assert c.principle("helpful").hazards == ()
    assert set(c.principle("non_evasive").hazards) == set(HAZARD_IDS)


def test_system_prompt_renders_preamble_principles_and_hazards() -> None:
    c = default_constitution()
    text = c.system_prompt()
    assert text.startswith(c.preamble)
    for p in c.principles:
        assert f"- {p.name}: {p.statement}" in text
    for h in c.hazards:
        assert h.name in text
    short = c.system_prompt(include_hazards=False)
    assert "Violent crimes" not in short and len(short) < len(text)
    assert c.hazard_block().splitlines()[0].startswith("S1: Violent crimes.")


def test_lookup_by_id_and_code_and_unknown_ids() -> None:
    c = default_constitution()
    assert c.hazard("S10").id == "hate"
    assert c.principle("privacy").name == "Respect privacy"
    with pytest.raises(UnknownIdError, match="did you mean 'privacy'"):
        c.principle("privcy")
    with pytest.raises(KeyError):  # callers may catch it as a KeyError too
        c.hazard("nope")
    with pytest.raises(ConfigError):
        c.principles_for("nope")


def test_roundtrip_of_default_data_loads(tmp_path: Path) -> None:
    c = load_constitution(_write(tmp_path, _default_data()))
    assert c.principle_ids == default_constitution().principle_ids


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["principles"][3].pop("revision"), r"principles\[3\]\.revision is missing"),
    (lambda d: d["principles"][0].__setitem__("critique", "   "), r"principles\[0\]\.critique is empty"),
    (lambda d: d["principles"][2].__setitem__("hazards", ["violent_crime"]),
     r"principles\[2\]\.hazards\[0\] 'violent_crime' is not a hazard.*did you mean 'violent_crimes'"),
    (lambda d: d["principles"][1].__setitem__("id", d["principles"][0]["id"]), r"principles\[1\]\.id 'helpful' is a duplicate id"),
    (lambda d: d["hazards"][1].__setitem__("id", "violent_crimes"), r"hazards\[1\]\.id 'violent_crimes' is a duplicate"),
    (lambda d: d["principles"][0].__setitem__("critque", "x"), r"principles\[0\]\.critque is not a known field; did you mean 'critique'"),
    (lambda d: d.pop("preamble"), r"preamble is missing"),
    (lambda d: d.__setitem__("principles", []), r"principles is empty"),
    (lambda d: d["principles"][0].__setitem__("hazards", "hate"), r"principles\[0\]\.hazards must be a list"),
    (lambda d: d["principles"][0].pop("hazards"), r"principles\[0\]\.hazards is missing"),
    (lambda d: d["hazards"][0].__setitem__("id", "Violent Crimes"), r"hazards\[0\]\.id 'Violent Crimes' must be snake_case"),
    (lambda d: d["principles"].__setitem__(0, "just text"), r"principles\[0\] must be a mapping"),
])
def test_malformed_constitution_names_file_and_field(tmp_path: Path, mutate, message: str) -> None:
    data = _default_data()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=message) as info:
        load_constitution(path)
    assert str(info.value).startswith(str(path))


def test_error_names_the_line(tmp_path: Path) -> None:
    text = (
        "name: x\nversion: '1'\npreamble: be good\n"
        "hazards:\n  - id: hate\n    name: Hate\n    description: hateful content\n"
        "principles:\n  - id: fair\n    name: Fair\n    critique: c\n    comparison: which?\n    hazards: [hate]\n"
    )
    with pytest.raises(ConfigError, match=r"^c\.yaml:9: principles\[0\]\.revision is missing"):
        parse_constitution(text, where="c.yaml")


def test_yaml_errors_and_duplicate_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml:2:\d+: invalid YAML"):
        parse_constitution("name: x\n  - bad: [\n", where="c.yaml")
    with pytest.raises(ConfigError, match=r"c\.yaml:2: name is given twice"):
        parse_constitution("name: x\nname: y\n", where="c.yaml")
    with pytest.raises(ConfigError, match="the file is empty"):
        parse_constitution("", where="c.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_constitution(tmp_path / "missing.yaml")


def test_custom_small_constitution_and_reload_after_edit(tmp_path: Path) -> None:
    data = {"name": "mini", "version": 2, "preamble": "Be kind.",
            "hazards": [{"id": "hate", "name": "Hate", "description": "d", "code": "H"}],
            "principles": [{"id": "kind", "name": "Kind", "critique": "c", "revision": "r",
                            "comparison": "which?", "hazards": []}]}
    path = _write(tmp_path, data)
    c = load_constitution(path)
    assert (c.version, c.hazard("H").id, c.principles_for("hate")) == ("2", "hate", ())
    data["principles"][0]["hazards"] = ["hate"]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    import os
    os.utime(path, ns=(1, 10**18))  # a different mtime: the cache must not serve the old file
    assert load_constitution(path).principles_for("hate")[0].id == "kind"


def test_import_is_light() -> None:
    code = "import sys, alignkit.feedback; alignkit.feedback.default_constitution(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
