"""Chat templating: assistant-only loss masks, pair tokenization, truncation policies, BOS handling."""

from __future__ import annotations

import pytest

from alignkit.data import (
    Conversation,
    Message,
    PreferencePair,
    TruncationStats,
    render_prompt,
    tokenize_conversation,
    tokenize_conversations,
    tokenize_pair,
    tokenize_pairs,
)
from alignkit.errors import AlignkitError, DataError

# SmolLM2-135M-Instruct's ChatML template (adds a default system prompt when there is none)
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>"]
CORPUS = [
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    "system user assistant hello there how are you today",
    "I am fine thank you. What is the capital of France? Paris is the capital.",
    "The quick brown fox jumps over the lazy dog. Write a short poem about the sea.",
] * 3


def build_tokenizer(chat_template: str | None = CHATML, bos_post_processor: bool = False):
    """A tiny byte-level BPE tokenizer trained in-process, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    if bos_post_processor:  # tokenizer(text) adds BOS itself, like Llama tokenizers
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = chat_template
    return fast


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def conv(*turns: tuple[str, str], source: str = "sft.jsonl:1") -> Conversation:
    return Conversation(tuple(Message(r, c) for r, c in turns), source=source)


def masked_runs(tokenizer, ids: list[int], mask: list[bool]) -> list[str]:
    """Decode each contiguous run of masked tokens."""
    runs: list[list[int]] = []
    for i, (token, on) in enumerate(zip(ids, mask)):
        if on:
            if i == 0 or not mask[i - 1]:
                runs.append([])
            runs[-1].append(token)
    return [tokenizer.decode(run) for run in runs]


def unmasked_text(tokenizer, ids: list[int], mask: list[bool]) -> str:
    return tokenizer.decode([t for t, on in zip(ids, mask) if not on])


# ---------------------------------------------------------------- loss masks


def test_mask_covers_assistant_reply_and_end_of_turn_only(tok) -> None:
    out = tokenize_conversation(tok, conv(("user", "What is the capital of France?"),
                                          ("assistant", "Paris is the capital.")), max_tokens=512)
    assert out is not None and out.source == "sft.jsonl:1"
    assert len(out.input_ids) == len(out.loss_mask)
    assert tok.decode(out.input_ids) == tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"},
         {"role": "assistant", "content": "Paris is the capital."}], tokenize=False)
    assert masked_runs(tok, out.input_ids, out.loss_mask) == ["Paris is the capital.<|im_end|>\n"]
    rest = unmasked_text(tok, out.input_ids, out.loss_mask)
    assert "What is the capital of France?" in rest and rest.endswith("<|im_start|>assistant\n")
    assert "named SmolLM" in rest  # the template's default system prompt is context, not target


def test_multi_turn_mask(tok) -> None:
    c = conv(("system", "Be brief."), ("user", "hello there"), ("assistant", "hello"),
             ("user", "how are you today"), ("assistant", "I am fine thank you."))
    out = tokenize_conversation(tok, c, max_tokens=512)
    assert masked_runs(tok, out.input_ids, out.loss_mask) == ["hello<|im_end|>\n",
                                                              "I am fine thank you.<|im_end|>\n"]
    rest = unmasked_text(tok, out.input_ids, out.loss_mask)
    assert rest == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello there<|im_end|>\n"
                    "<|im_start|>assistant\n<|im_start|>user\nhow are you today<|im_end|>\n"
                    "<|im_start|>assistant\n")


def test_empty_mask_is_an_error(tok) -> None:
    with pytest.raises(DataError, match="sft.jsonl:1: conversation has no assistant turn"):
        tokenize_conversation(tok, conv(("user", "hi")), max_tokens=64)
    user_only = build_tokenizer(
        "{% for m in messages %}{% if m['role'] != 'assistant' %}{{ m['content'] + '\n' }}{% endif %}"
        "{% endfor %}")
    with pytest.raises(DataError, match="assistant message 1 renders to no tokens"):
        tokenize_conversation(user_only, conv(("user", "hi"), ("assistant", "hello")), max_tokens=64)


def test_template_that_rewrites_earlier_turns_is_detected(tok) -> None:
    # renders the generation header differently from the assistant turn itself
    odd = build_tokenizer(
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant:' }}{% endif %}")
    with pytest.raises(DataError, match="sft.jsonl:1: the chat template renders the prompt before "
                                        "message 1 differently"):
        tokenize_conversation(odd, conv(("user", "hi"), ("assistant", "hello")), max_tokens=64)


def test_no_chat_template_is_a_clear_error() -> None:
    plain = build_tokenizer(chat_template=None)
    with pytest.raises(AlignkitError, match="has no chat template"):
        render_prompt(plain, [Message("user", "hi")])


def test_no_duplicated_bos() -> None:
    bos_tok = build_tokenizer("{{ bos_token }}" + CHATML, bos_post_processor=True)
    bos = bos_tok.convert_tokens_to_ids("<s>")
    assert bos_tok("hi")["input_ids"][0] == bos  # plain tokenizing would add a second BOS
    out = tokenize_conversation(bos_tok, conv(("user", "hi"), ("assistant", "hello")), max_tokens=128)
    assert out.input_ids[0] == bos and out.input_ids.count(bos) == 1
    pair = PreferencePair((Message("user", "hi"),), (Message("assistant", "a"),),
                          (Message("assistant", "b"),))
    tp = tokenize_pair(bos_tok, pair, max_tokens=128, max_prompt_tokens=64)
    assert tp.prompt_ids[0] == bos and tp.prompt_ids.count(bos) == 1 and bos not in tp.chosen_ids
    assert render_prompt(bos_tok, [{"role": "user", "content": "hi"}]).count(bos) == 1


# ---------------------------------------------------------------- pairs and prompts


PAIR = PreferencePair((Message("user", "Write a short poem about the sea."),),
                      (Message("assistant", "The sea is blue and the sea is deep."),),
                      (Message("assistant", "No."),), margin=2.0, source="prefs.jsonl:7")


def test_tokenize_pair_splits_prompt_and_replies(tok) -> None:
    out = tokenize_pair(tok, PAIR, max_tokens=512, max_prompt_tokens=256)
    assert out.margin == 2.0 and out.source == "prefs.jsonl:7"
    assert out.prompt_ids == render_prompt(tok, PAIR.prompt)
    assert tok.decode(out.prompt_ids).endswith("about the sea.<|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(out.chosen_ids) == "The sea is blue and the sea is deep.<|im_end|>\n"
    assert tok.decode(out.rejected_ids) == "No.<|im_end|>\n"


def test_pair_truncation_policies(tok) -> None:
    full = tokenize_pair(tok, PAIR, max_tokens=512, max_prompt_tokens=256)
    limit = len(full.prompt_ids) + len(full.chosen_ids) - 3
    cap = len(full.prompt_ids)  # the prompt itself fits
    with pytest.raises(DataError, match=rf"prefs.jsonl:7: .* exceed max_tokens={limit}"):
        tokenize_pair(tok, PAIR, max_tokens=limit, max_prompt_tokens=cap, truncation="error")
    pairs, stats = tokenize_pairs(tok, [PAIR, PAIR], max_tokens=limit, max_prompt_tokens=cap,
                                  truncation="drop")
    assert pairs == [] and (stats.total, stats.dropped, stats.truncated) == (2, 2, 0)
    # prompt kept whole here (it fits max_prompt_tokens); replies right-truncated to fit
    pairs, stats = tokenize_pairs(tok, [PAIR], max_tokens=limit, max_prompt_tokens=cap)
    out = pairs[0]
    assert out.prompt_ids == full.prompt_ids
    assert out.chosen_ids == full.chosen_ids[:-3] and out.rejected_ids == full.rejected_ids
    assert len(out.prompt_ids) + max(len(out.chosen_ids), len(out.rejected_ids)) == limit
    assert stats.truncated == 1 and "1 truncated" in stats.summary()


def test_pair_prompt_left_truncated_keeps_header(tok) -> None:
    full = tokenize_pair(tok, PAIR, max_tokens=512, max_prompt_tokens=256)
    out = tokenize_pair(tok, PAIR, max_tokens=40, max_prompt_tokens=10)
    assert out.prompt_ids == full.prompt_ids[-10:]  # the end: latest turn and assistant header
    assert out.chosen_ids == full.chosen_ids[:30]
    assert tok.decode(out.prompt_ids).endswith("<|im_start|>assistant\n")


def test_pair_limits_are_checked(tok) -> None:
    with pytest.raises(AlignkitError, match="max_prompt_tokens must be in"):
        tokenize_pair(tok, PAIR, max_tokens=64, max_prompt_tokens=64)
    with pytest.raises(AlignkitError, match="truncation must be one of"):
        tokenize_pair(tok, PAIR, max_tokens=64, max_prompt_tokens=32, truncation="cut")  # type: ignore


# ---------------------------------------------------------------- conversation truncation


LONG = conv(("user", "Write a short poem about the sea. " * 4), ("assistant", "hello"),
            ("user", "how are you today"), ("assistant", "I am fine thank you. " * 4))


def test_conversation_error_and_drop(tok) -> None:
    n = len(tokenize_conversation(tok, LONG, max_tokens=4096).input_ids)
    with pytest.raises(DataError, match=rf"sft.jsonl:1: {n} tokens exceed max_tokens=20"):
        tokenize_conversation(tok, LONG, max_tokens=20, truncation="error")
    stats = TruncationStats()
    assert tokenize_conversation(tok, LONG, max_tokens=20, truncation="drop", stats=stats) is None
    assert (stats.total, stats.dropped) == (1, 1)


def test_conversation_truncate_keeps_context_end_and_reply_start(tok) -> None:
    full = tokenize_conversation(tok, LONG, max_tokens=4096)
    start = max(i for i, on in enumerate(full.loss_mask) if not on) + 1  # the final reply begins
    reply_len = len(full.input_ids) - start
    # the reply fits in half the budget: only leading context is cut
    assert start > reply_len + 4
    outs, stats = tokenize_conversations(tok, [LONG], max_tokens=2 * reply_len + 4)
    out = outs[0]
    assert out.input_ids == full.input_ids[start - reply_len - 4:]
    assert out.loss_mask == full.loss_mask[start - reply_len - 4:]
    assert (stats.total, stats.truncated) == (1, 1)
    # a tight budget keeps half for context and the reply's first tokens
    tight = tokenize_conversation(tok, LONG, max_tokens=16)
    assert tight.input_ids == full.input_ids[start - 8: start + 8]
    assert tight.loss_mask == [False] * 8 + [True] * 8


def test_truncation_always_keeps_the_start_of_the_final_reply(tok) -> None:
    full = tokenize_conversation(tok, LONG, max_tokens=4096)
    start = max(i for i, on in enumerate(full.loss_mask) if not on) + 1
    out = tokenize_conversation(tok, LONG, max_tokens=2)
    assert out.input_ids == full.input_ids[start - 1: start + 1] and out.loss_mask == [False, True]
