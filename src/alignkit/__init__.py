"""alignkit: align language models (helpful, honest, harmless) and prove it with measurements.

Importing this package is cheap: torch and transformers load only when a model is touched.
"""

from alignkit.errors import AlignkitError, ConfigError, DataError

__version__ = "0.1.0"

__all__ = ["AlignkitError", "ConfigError", "DataError", "__version__"]
