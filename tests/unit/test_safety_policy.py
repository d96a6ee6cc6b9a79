"""The guard policy YAML: the shipped default loads; mistakes are errors that name the key."""

from __future__ import annotations

import pytest

from alignkit.errors import ConfigError
from alignkit.safety.policy import GuardPolicy, load_policy


def test_shipped_policy_matches_the_defaults():
    assert load_policy() == GuardPolicy()


@pytest.mark.parametrize("override, message", [
    ("classifier.threshold=1.5", "threshold must be in (0, 1]"),
    ("classifer.threshold=0.3", "did you mean 'classifier'"),
    ("pii.kinds=[email,passport]", "unknown PII kind"),
    ("pii.action=mask", "one of 'redact', 'block'"),
    ("classifier.category_thresholds={hat: 0.2}", "unknown hazard id"),
    ("injection.stages=[]", "stages is empty"),
    ("classifier.stages=[input,middle]", "classifier.stages[1]"),
    ("llm_judge.enabled=true", "model is not set"),
])
def test_invalid_policies_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_policy(overrides=[override])


def test_policy_file_errors_name_the_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("injection:\n  threshold: 2\n")
    with pytest.raises(ConfigError, match="p.yaml"):
        load_policy(path)
    path.write_text("pii:\n  action: block\nclassifier:\n  category_thresholds: {hate: 0.8}\n")
    p = load_policy(path)
    assert p.pii.action == "block" and p.classifier.category_thresholds == {"hate": 0.8}
