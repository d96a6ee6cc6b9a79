"""The guarded OpenAI-compatible server (`alignkit serve`): FastAPI + uvicorn, imported only when serving."""

from alignkit.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app", "build_app"]


def __getattr__(name: str):  # lazy: fastapi loads only when an app is built
    if name == "create_app":
        from alignkit.serve.app import create_app

        return create_app
    if name == "build_app":
        from alignkit.commands.serve import build_app

        return build_app
    raise AttributeError(f"module 'alignkit.serve' has no attribute {name!r}")
