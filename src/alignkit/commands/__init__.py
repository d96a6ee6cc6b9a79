"""One module per CLI verb. Each exposes `register(subparsers)`; `alignkit.cli` lists them in `VERBS`.

A command module must not import torch or transformers at import time (help stays instant); the
function it sets as `func` imports what it needs.
"""
