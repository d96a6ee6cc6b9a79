"""The labeling web app (FastAPI): sign-in, the A/B page and its JSON API, and the admin pages.

Who may do what:
- an annotator (per-person token) sees and judges only the items assigned to them; an assignment id
  of someone else's is answered exactly like a missing one (404);
- the admin (admin token, or ALIGNKIT_ANNOTATE_ADMIN_TOKEN) sees progress, agreement and exports;
- tokens are compared in constant time (hmac.compare_digest) against stored sha256 hashes.
The token travels in an HttpOnly, SameSite=Strict cookie; every state change is a JSON POST (a form
or link on another site can send neither) from the same origin. Model output reaches the page only as
HTML rendered by `render.py` (raw HTML escaped), and a Content-Security-Policy without inline scripts
stops anything that slipped through from running.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import asdict
from importlib import resources
from typing import Any, Literal
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from alignkit.annotate.render import render_messages
from alignkit.annotate.store import AnnotateError, AnnotationStore, Task

__all__ = ["create_app", "COOKIE", "ADMIN_TOKEN_ENV"]

# imported by `alignkit annotate serve` and the tests only; the CLI's --help never loads this module

COOKIE = "alignkit_annotate"
ADMIN_TOKEN_ENV = "ALIGNKIT_ANNOTATE_ADMIN_TOKEN"
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


class Login(BaseModel):
    token: str = Field(min_length=1, max_length=200)


class Judge(BaseModel):
    assignment_id: int
    choice: Literal["A", "B", "tie", "both_bad"]
    reason: str = Field("", max_length=2000)
    confidence: int | None = Field(None, ge=1, le=3)
    time_ms: int | None = Field(None, ge=0)
    request_id: str | None = Field(None, max_length=64)


class Skip(BaseModel):
    assignment_id: int


def _task_json(task: Task | None) -> dict[str, Any] | None:
    if task is None:
        return None
    return {"assignment_id": task.assignment_id, "prompt": render_messages(task.prompt),
            "a": render_messages(task.a), "b": render_messages(task.b), "previous": task.previous}


def create_app(store: AnnotationStore, admin_token: str | None = None) -> Any:
    """The ASGI app. `admin_token` (else the env variable) is accepted besides the stored admin token."""
    from alignkit.annotate.stats import compute_stats

    env_admin = admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None
    app = FastAPI(title="alignkit annotate", docs_url=None, redoc_url=None, openapi_url=None)
    package = resources.files("alignkit.annotate")
    templates = Jinja2Templates(directory=str(package / "templates"))
    app.mount("/static", StaticFiles(directory=str(package / "static")), name="static")

    def role_of(token: str | None) -> tuple[str, Any] | None:
        if not token:
            return None
        if store.is_admin(token) or (env_admin is not None and hmac.compare_digest(token.encode(), env_admin.encode())):
            return ("admin", None)
        who = store.annotator_for(token)
        return ("annotator", who) if who else None

    def token_of(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else request.cookies.get(COOKIE)

    def annotator(request: Request) -> tuple[int, str]:
        role = role_of(token_of(request))
        if role is None or role[0] != "annotator":
            raise HTTPException(401, "sign in with your annotator token")
        return role[1]

    def require_admin(request: Request) -> None:
        role = role_of(token_of(request))
        if role is None or role[0] != "admin":
            raise HTTPException(401, "the admin token is required")

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if request.method == "POST":
            # JSON-only POSTs from this origin: a cross-site form cannot forge a judgment
            if not request.headers.get("content-type", "").startswith("application/json"):
                return JSONResponse({"detail": "expected application/json"}, status_code=415)
            origin = request.headers.get("origin")
            if origin and urlsplit(origin).netloc != request.headers.get("host"):
                return JSONResponse({"detail": "cross-origin request refused"}, status_code=403)
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(AnnotateError)
    async def store_error(request: Request, exc: AnnotateError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    @app.get("/")
    def index(request: Request) -> Response:
        role = role_of(token_of(request))
        if role is not None:
            return RedirectResponse("/admin" if role[0] == "admin" else "/label", status_code=303)
        return templates.TemplateResponse(request, "login.html", {})

    @app.post("/api/login")
    def login(request: Request, body: Login) -> Response:
        role = role_of(body.token)
        if role is None:
            raise HTTPException(401, "unknown token")
        name = "admin" if role[0] == "admin" else role[1][1]
        response = JSONResponse({"role": role[0], "name": name,
                                 "next": "/admin" if role[0] == "admin" else "/label"})
        response.set_cookie(COOKIE, body.token, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", max_age=30 * 24 * 3600)
        return response

    @app.post("/api/logout")
    def logout() -> Response:
        response = JSONResponse({"ok": True})
        response.delete_cookie(COOKIE)
        return response

    @app.get("/label")
    def label(request: Request) -> Response:
        role = role_of(token_of(request))
        if role is None or role[0] != "annotator":
            return RedirectResponse("/", status_code=303)
        return templates.TemplateResponse(request, "label.html", {"name": role[1][1]})

    def state(who: tuple[int, str], task: Task | None, **extra: Any) -> dict[str, Any]:
        return {"task": _task_json(task), "progress": asdict(store.progress(who[0])), "name": who[1], **extra}

    @app.get("/api/task")
    def task(request: Request) -> dict[str, Any]:
        who = annotator(request)
        return state(who, store.current(who[0]))

    @app.post("/api/judge")
    def judge(request: Request, body: Judge) -> dict[str, Any]:
        who = annotator(request)
        jid = store.judge(who[0], body.assignment_id, body.choice, reason=body.reason,
                          confidence=body.confidence, time_ms=body.time_ms, request_id=body.request_id)
        return state(who, store.current(who[0]), judgment_id=jid)

    @app.post("/api/skip")
    def skip(request: Request, body: Skip) -> dict[str, Any]:
        who = annotator(request)
        store.skip(who[0], body.assignment_id)
        return state(who, store.current(who[0]))

    @app.post("/api/undo")
    def undo(request: Request) -> dict[str, Any]:
        who = annotator(request)
        return state(who, store.undo(who[0]))

    @app.get("/admin")
    def admin(request: Request) -> Response:
        if (role := role_of(token_of(request))) is None or role[0] != "admin":
            return RedirectResponse("/", status_code=303)
        return templates.TemplateResponse(request, "admin.html", {"s": compute_stats(store)})

    @app.get("/admin/stats.json")
    def admin_stats(request: Request) -> dict[str, Any]:
        require_admin(request)
        return compute_stats(store)

    @app.get("/admin/export.jsonl")
    def admin_export(request: Request, mode: Literal["majority", "all"] = "majority", min_votes: int = 1,
                     min_agreement: float = 0.0) -> Response:
        require_admin(request)
        return Response(_export_text(store, mode, min_votes, min_agreement), media_type="application/x-ndjson",
                        headers={"Content-Disposition": f'attachment; filename="preferences-{mode}.jsonl"'})

    return app


def _export_text(store: AnnotationStore, mode: str, min_votes: int, min_agreement: float) -> str:
    import tempfile
    from pathlib import Path

    from alignkit.annotate.dataset import export_preferences

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export.jsonl"
        export_preferences(store, out, mode=mode, min_votes=min_votes,  # type: ignore[arg-type]
                           min_agreement=min_agreement)
        return out.read_text(encoding="utf-8")
