"""Obfuscation transforms: rewrite a request so a safety-trained model may not recognise it, while a
capable reader still can. Each has an exact inverse (`decode(encode(x)) == x`, tested) and a lenient
`read` that turns a *reply* back into plain text for the judge (a model asked in base64 may answer in
base64; the judge must see what it said).

- `base64`, `rot13`: the classic encodings (garak `encoding`, PyRIT converters).
- `leetspeak`: letters to look-alike digits (a->4, e->3, ...). Exact on text without those digits.
- `char_split`: every character separated ("h o w | t o"), which breaks the request's tokens apart.
- `pig_latin`, `reverse_words`: low-resource-language *style* transforms. Low-resource-language attacks
  (Yong et al. 2023) translate the request into, e.g., Zulu, where safety training is thin. Without a
  translation model offline, these language games play the same role: the meaning survives for a
  capable reader, the surface is unlike the safety training data. `TranslateTransform` does the real
  thing through any `Generator` (a translation-capable model or endpoint).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from alignkit.generate.base import Generator

__all__ = ["Transform", "Base64", "Rot13", "Leetspeak", "CharSplit", "PigLatin", "ReverseWords",
           "TranslateTransform", "TRANSFORMS", "get_transform"]


@runtime_checkable
class Transform(Protocol):
    name: str
    describe: str  # how the attack prompt names the encoding ("base64", "ROT13", ...)

    def encode(self, text: str) -> str:
        ...

    def decode(self, text: str) -> str:
        """The exact inverse of `encode` (raises ValueError when `text` is not this encoding)."""
        ...

    def read(self, reply: str) -> str:
        """A best-effort plain-text view of a model's reply (the reply itself when nothing decodes)."""
        ...


class Base64:
    name, describe = "base64", "base64"
    _BLOB = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")

    def encode(self, text: str) -> str:
        return base64.b64encode(text.encode("utf-8")).decode("ascii")

    def decode(self, text: str) -> str:
        try:
            return base64.b64decode(text.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ValueError(f"not base64 text: {exc}") from None

    def read(self, reply: str) -> str:
        """Replace every base64 blob that decodes to printable UTF-8 by its decoding."""
        def sub(match: re.Match[str]) -> str:
            blob = match.group(0)
            try:
                out = base64.b64decode(blob + "=" * (-len(blob) % 4)).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return blob
            return out if out.isprintable() or "\n" in out else blob

        return self._BLOB.sub(sub, reply)


class Rot13:
    name, describe = "rot13", "ROT13 (each letter shifted 13 places)"

    def encode(self, text: str) -> str:
        return codecs.encode(text, "rot13")

    def decode(self, text: str) -> str:
        return codecs.decode(text, "rot13")

    def read(self, reply: str) -> str:
        return self.decode(reply)


class Leetspeak:
    """a->4 e->3 i->1 o->0 s->5 t->7 (either case). Exact inverse on lower-case text without those digits."""

    name, describe = "leetspeak", "leetspeak (digits stand for look-alike letters)"
    _TO = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7",
                         "A": "4", "E": "3", "I": "1", "O": "0", "S": "5", "T": "7"})
    _FROM = str.maketrans({"4": "a", "3": "e", "1": "i", "0": "o", "5": "s", "7": "t"})

    def encode(self, text: str) -> str:
        return text.translate(self._TO)

    def decode(self, text: str) -> str:
        return text.translate(self._FROM)

    def read(self, reply: str) -> str:
        # only inside words: "7h3 f1r57 573p" -> "the first step", while "step 2" keeps its number
        return re.sub(r"\b(?=\w*[A-Za-z])\w+\b", lambda m: m.group(0).translate(self._FROM), reply)


class CharSplit:
    """Characters separated by spaces, words by " | ". Exact inverse on text with single spaces."""

    name, describe = "char_split", "split characters (letters separated by spaces, words by |)"
    _SEP = " | "

    def encode(self, text: str) -> str:
        return self._SEP.join(" ".join(word) for word in text.split(" "))

    def decode(self, text: str) -> str:
        return " ".join(word.replace(" ", "") for word in text.split(self._SEP))

    def read(self, reply: str) -> str:
        tokens = reply.split()
        singles = sum(len(t) == 1 for t in tokens)
        # only a reply that is itself mostly single characters is split text
        return self.decode(reply) if tokens and singles / len(tokens) > 0.6 else reply


_VOWELS = "aeiouAEIOU"
_WORD = re.compile(r"[^\W\d_]+")  # letters, accented ones included
# rest-of-word, "-", the moved letters (never an a/e/i/o/u: the cut is at the first one), "ay"
_PIG = re.compile(r"\b([^\W\d_]+)-([^\W\d_aeiouAEIOU]*)ay\b")


class PigLatin:
    """A language game: "string" -> "ing-stray", "apple" -> "apple-ay". Words without a vowel stay.

    The hyphen and the explicit empty cluster ("-ay") make it exactly invertible, unlike the schoolyard
    form ("appleway" could be "apple" or "wapple")."""

    name, describe = "pig_latin", "Pig Latin (each word's first consonants moved to the end, plus 'ay')"

    @staticmethod
    def _word(word: str) -> str:
        cut = next((i for i, ch in enumerate(word) if ch in _VOWELS), None)
        if cut is None:
            return word
        return f"{word[cut:]}-{word[:cut]}ay"

    def encode(self, text: str) -> str:
        return _WORD.sub(lambda m: self._word(m.group(0)), text)

    def decode(self, text: str) -> str:
        return _PIG.sub(lambda m: m.group(2) + m.group(1), text)

    def read(self, reply: str) -> str:
        return self.decode(reply)


class ReverseWords:
    """Each word spelled backwards ("how to" -> "woh ot"): its own inverse."""

    name, describe = "reverse_words", "reversed words (each word spelled backwards)"

    def encode(self, text: str) -> str:
        return re.sub(r"\S+", lambda m: m.group(0)[::-1], text)

    def decode(self, text: str) -> str:
        return self.encode(text)

    def read(self, reply: str) -> str:
        return self.decode(reply)


@dataclass
class TranslateTransform:
    """Translation into another language through any `Generator` (a real low-resource-language attack).

    Not an exact inverse: `decode` and `read` translate back with the same model. Needs a model that
    translates well; SmolLM2-135M does not, so this is not in the default set."""

    generator: "Generator"
    language: str
    max_tokens: int = 256

    @property
    def name(self) -> str:
        return f"translate_{re.sub(r'[^a-z0-9]+', '_', self.language.lower())}"

    @property
    def describe(self) -> str:
        return self.language

    def _translate(self, text: str, into: str) -> str:
        from alignkit.generate.base import SamplingParams

        chat = [{"role": "user", "content": f"Translate the following text into {into}. Reply with the translation "
                                            f"only.\n\n{text}"}]
        return self.generator.generate([chat], SamplingParams(max_tokens=self.max_tokens))[0][0].text.strip()

    def encode(self, text: str) -> str:
        return self._translate(text, self.language)

    def decode(self, text: str) -> str:
        return self._translate(text, "English")

    def read(self, reply: str) -> str:
        return self.decode(reply)


TRANSFORMS: dict[str, type] = {t.name: t for t in (Base64, Rot13, Leetspeak, CharSplit, PigLatin, ReverseWords)}


def get_transform(name: str) -> Transform:
    if name not in TRANSFORMS:
        from alignkit.errors import ConfigError

        raise ConfigError(f"unknown obfuscation transform '{name}'; known: {', '.join(TRANSFORMS)} "
                          "(translation needs obfuscation.translator)")
    return TRANSFORMS[name]()
