"""Data records, loading (files, dataset directories, hub ids) and chat templating with loss masks.

Importing this package imports neither torch nor transformers.
"""

from alignkit.data.load import LoadResult, load_conversations, load_preferences, load_prompts
from alignkit.data.records import ROLES, Conversation, Message, PreferencePair, Prompt
from alignkit.data.template import (
    TokenizedConversation,
    TokenizedPair,
    Truncation,
    TruncationStats,
    render_prompt,
    tokenize_conversation,
    tokenize_conversations,
    tokenize_pair,
    tokenize_pairs,
)

__all__ = [
    "ROLES",
    "Message",
    "Conversation",
    "PreferencePair",
    "Prompt",
    "LoadResult",
    "load_conversations",
    "load_preferences",
    "load_prompts",
    "TokenizedConversation",
    "TokenizedPair",
    "TruncationStats",
    "Truncation",
    "tokenize_conversation",
    "tokenize_pair",
    "tokenize_conversations",
    "tokenize_pairs",
    "render_prompt",
]
