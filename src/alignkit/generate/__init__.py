"""Generation backends behind one `Generator` interface (see `base.py`)."""

from alignkit.generate.base import Chat, Completion, Generator, SamplingParams
from alignkit.generate.factory import get_generator
from alignkit.generate.local import LocalGenerator, generate_local

__all__ = ["Chat", "Completion", "Generator", "LocalGenerator", "SamplingParams", "generate_local",
           "get_generator"]
