"""Markdown and code in model output, rendered to HTML that cannot carry markup of its own.

markdown-it-py runs with raw HTML off: every `<`, `>` and `&` in a response is escaped before any
markdown is applied, so `<script>` or `<img onerror=...>` in model output shows as text. On top:
links only to http(s)/mailto (and opened with noopener, nofollow), and images shown as their text and
address instead of being fetched (a response must not make the annotator's browser call a host).
"""

from __future__ import annotations

import html
from functools import lru_cache
from typing import Any

__all__ = ["render_markdown", "render_messages"]

_SAFE_SCHEMES = ("http://", "https://", "mailto:")


@lru_cache(maxsize=1)
def _markdown() -> Any:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "breaks": True, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.validateLink = lambda url: url.strip().lower().startswith(_SAFE_SCHEMES)

    def link_open(renderer: Any, tokens: list, idx: int, options: dict, env: dict) -> str:
        tokens[idx].attrSet("rel", "nofollow noopener noreferrer")
        tokens[idx].attrSet("target", "_blank")
        return renderer.renderToken(tokens, idx, options, env)

    def image(renderer: Any, tokens: list, idx: int, options: dict, env: dict) -> str:
        token = tokens[idx]
        alt = "".join(child.content for child in token.children or [])
        src = str(token.attrGet("src") or "")
        return f'<span class="image-ref">[image: {html.escape(alt)} {html.escape(src)}]</span>'

    # add_render_rule binds each rule to the renderer, hence the first parameter
    md.add_render_rule("link_open", link_open)
    md.add_render_rule("image", image)
    return md


def render_markdown(text: str) -> str:
    """Safe HTML for one message's text."""
    return _markdown().render(text)


def render_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """[{"role", "html"}] for a list of chat messages; roles are fixed words, content is rendered."""
    out = []
    for msg in messages:
        role = msg.get("role", "")
        out.append({"role": role if role in ("system", "user", "assistant") else "unknown",
                    "html": render_markdown(str(msg.get("content", "")))})
    return out
