"""A tiny random-initialized Llama-architecture model and a real ChatML tokenizer, built in-process.

No download: the byte-level BPE tokenizer is trained on a few built-in sentences in milliseconds. Used
by tests and by the built-in name `tiny-random-llama`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CHATML_TEMPLATE", "tiny_tokenizer", "tiny_model", "tiny_model_and_tokenizer"]

CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "I can't help with that, because it could hurt people. Here is a safer option instead.",
    "Sure, here is how to sort a list in Python: use sorted(items) or items.sort().",
    "Water boils at 100 degrees Celsius at sea level.",
    "You are a helpful assistant. The user asks a question and the assistant answers it.",
    "How do I kill a Python process? Use kill with the process id, or Ctrl+C in the terminal.",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`",
]


def tiny_tokenizer(vocab_size: int = 384) -> Any:
    """A byte-level BPE tokenizer with ChatML special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|endoftext|>", unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_model(vocab_size: int, *, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2,
               intermediate: int = 64, seed: int = 0, tie_embeddings: bool = True) -> Any:
    """A random-initialized LlamaForCausalLM (float32), deterministic given `seed`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=1024,
        tie_word_embeddings=tie_embeddings, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(cfg)


def tiny_model_and_tokenizer(seed: int = 0) -> tuple[Any, Any]:
    tok = tiny_tokenizer()
    return tiny_model(len(tok), seed=seed), tok
