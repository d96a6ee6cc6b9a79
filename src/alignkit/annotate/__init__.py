"""Human preference collection: a labeling web app, its SQLite store, import/export and agreement stats.

`alignkit annotate serve|import|export|stats|token`. Importing this package loads neither the web
framework nor torch; `alignkit.annotate.app` (FastAPI) is imported only to serve.
"""

from alignkit.annotate.agreement import binomial_two_sided_p, category_table, cohen_kappa, fleiss_kappa
from alignkit.annotate.dataset import ExportResult, ImportResult, export_preferences, majority, read_pairs
from alignkit.annotate.store import AnnotateError, AnnotationStore, PairItem, Progress, Task

__all__ = [
    "AnnotationStore",
    "AnnotateError",
    "PairItem",
    "Progress",
    "Task",
    "read_pairs",
    "ImportResult",
    "export_preferences",
    "ExportResult",
    "majority",
    "cohen_kappa",
    "fleiss_kappa",
    "category_table",
    "binomial_two_sided_p",
]
