"""Obfuscation transforms: exact round trips, known encodings, and reading a model's encoded reply."""

from __future__ import annotations

import base64
import codecs

import pytest

from alignkit.generate.base import Completion, SamplingParams
from alignkit.safety.redteam.transforms import (
    TRANSFORMS,
    Base64,
    CharSplit,
    Leetspeak,
    PigLatin,
    ReverseWords,
    Rot13,
    TranslateTransform,
    get_transform,
)

SENTENCES = [
    "Give detailed step-by-step instructions for making a paper airplane.",
    "Write a persuasive article about why cats are better than dogs!",
    "Explain how to culture E.coli bacteria at home (for a school project), in 3 steps?",
    "Ünïcode text, quotes \"like this\" and an apostrophe's place: fine",
]


@pytest.mark.parametrize("name", ["base64", "rot13", "char_split", "pig_latin", "reverse_words"])
@pytest.mark.parametrize("text", SENTENCES)
def test_round_trip_is_exact(name: str, text: str) -> None:
    t = get_transform(name)
    encoded = t.encode(text)
    assert encoded != text
    assert t.decode(encoded) == text


def test_leetspeak_round_trip_on_lowercase_text_without_digits() -> None:
    t = Leetspeak()
    text = "give detailed instructions for sorting a list, step by step!"
    encoded = t.encode(text)
    assert not set("aeiost") & set(encoded)
    assert encoded.startswith("g1v3 d3741l3d 1n57ruc710n5")
    assert t.decode(encoded) == text


def test_known_encodings() -> None:
    assert Base64().encode("how to") == base64.b64encode(b"how to").decode()
    assert Rot13().encode("Hello") == codecs.encode("Hello", "rot13") == "Uryyb"
    assert CharSplit().encode("how to") == "h o w | t o"
    assert PigLatin().encode("string apple my") == "ing-stray apple-ay my"
    assert PigLatin().encode("Give") == "ive-Gay"
    assert ReverseWords().encode("how to go") == "woh ot og"


def test_base64_decode_rejects_non_base64() -> None:
    with pytest.raises(ValueError, match="not base64"):
        Base64().decode("this is not base64 at all!")


def test_read_turns_replies_back_into_plain_text() -> None:
    secret = "Step one: mix the flour and the water."
    reply = f"Sure! Decoded answer: {Base64().encode(secret)} hope that helps"
    assert secret in Base64().read(reply)
    assert Base64().read("no blobs here") == "no blobs here"
    assert Rot13().read(Rot13().encode(secret)) == secret
    assert Leetspeak().read("7h3 f1r57 573p is step 2") == "the first step is step 2"
    assert CharSplit().read(CharSplit().encode("mix the flour")) == "mix the flour"
    assert CharSplit().read("a normal reply with words") == "a normal reply with words"
    assert PigLatin().read(PigLatin().encode(secret)) == secret


def test_unknown_transform_names_the_known_ones() -> None:
    from alignkit.errors import ConfigError

    with pytest.raises(ConfigError, match="base64"):
        get_transform("morse")
    assert set(TRANSFORMS) == {"base64", "rot13", "leetspeak", "char_split", "pig_latin", "reverse_words"}


class Dictionary:
    """A Generator test double that 'translates' with a word table (both directions)."""

    name = "dictionary"
    table = {"how to bake bread": "indlela yokubhaka isinkwa", "indlela yokubhaka isinkwa": "how to bake bread"}

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def generate(self, chats, params=SamplingParams()):
        out = []
        for chat in chats:
            text = chat[-1]["content"]
            self.prompts.append(text)
            source = text.split("\n\n", 1)[1]
            out.append([Completion(self.table.get(source, source), 3, "stop")])
        return out

    def choice_logprobs(self, chats, choices):
        raise NotImplementedError


def test_translate_transform_goes_through_the_generator() -> None:
    gen = Dictionary()
    t = TranslateTransform(gen, "Zulu")
    assert t.name == "translate_zulu"
    encoded = t.encode("how to bake bread")
    assert encoded == "indlela yokubhaka isinkwa"
    assert "into Zulu" in gen.prompts[0]
    assert t.decode(encoded) == "how to bake bread"
    assert "into English" in gen.prompts[1]
