"""The lean MiniLM path gives sentence-transformers' embeddings (the classifier's head depends on it)."""

from __future__ import annotations

import pytest
import torch

from alignkit.embeddings import Embedder, get_embedder

TEXTS = ["How can I kill a Python process?", "hi", "A longer sentence about rain in Paris, with sun later.",
         "word " * 400]  # longer than the 256-token limit: truncated the same way


def test_matches_sentence_transformers():
    pytest.importorskip("sentence_transformers")
    from alignkit.embeddings import encode_with_sentence_transformers

    ours = get_embedder().encode(TEXTS)
    ref = encode_with_sentence_transformers(TEXTS).cpu()
    assert ours.shape == (4, 384)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_batching_and_order_do_not_change_results():
    e = get_embedder()
    together = e.encode(TEXTS, batch_size=2)
    alone = torch.cat([e.encode([t]) for t in TEXTS])
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_bfloat16_is_close_and_thread_setting_is_restored():
    threads = torch.get_num_threads()
    fast = Embedder(dtype="bfloat16").encode(TEXTS[:3])
    assert torch.get_num_threads() == threads
    assert (fast * get_embedder().encode(TEXTS[:3])).sum(-1).min() > 0.99


def test_rejects_a_bare_string():
    with pytest.raises(TypeError):
        get_embedder().encode("one string")
