"""Integration tier: the real SmolLM2-135M-Instruct model and the shared benchmark data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BENCHMARKS = Path(os.environ.get("ALIGNKIT_BENCHMARKS", Path(__file__).resolve().parents[3] / "shared" / "benchmarks"))


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def smollm2():
    from alignkit.models import ModelConfig, load_model

    return load_model(ModelConfig(name="smollm2-135m-instruct"), for_training=False)


@pytest.fixture(scope="session")
def benchmarks() -> Path:
    if not BENCHMARKS.is_dir():
        pytest.skip(f"benchmark data not found at {BENCHMARKS} (set ALIGNKIT_BENCHMARKS)")
    return BENCHMARKS
