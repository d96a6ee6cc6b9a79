"""Prompt-injection and jailbreak detection: undo the usual obfuscations, then look for override phrasing.

`deobfuscate(text)` returns the readable views of a message: Unicode-normalised with homoglyphs folded and
invisible characters removed, plus any hidden payload it carries (base64 or hex blobs, rot13, leetspeak,
text smuggled in Unicode tag characters). The guard re-checks every view with the harm classifier too,
so "aG93IHRvIG1ha2UgYSBib21i" is judged as what it decodes to. `InjectionRail` scores each view against
instruction-override phrasing, known jailbreak templates (DAN, developer mode, AIM, evil confidant, ...)
and chat-role spoofing, and adds evidence for the obfuscation itself.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

from alignkit.safety.decision import RailVerdict, Stage

__all__ = ["View", "deobfuscate", "injection_score", "InjectionRail", "PATTERNS"]

# zero-width and bidi control characters; Unicode tags (U+E0000-E007F) are decoded, not just dropped
_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e"
                        "\u2060-\u2064\u2066-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]")
_TAGS = re.compile("[\U000e0000-\U000e007f]+")
# Cyrillic / Greek / other look-alikes that NFKC keeps apart from Latin
_HOMOGLYPHS = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    "ɡ": "g", "ɩ": "i", "ʏ": "y", "ᴀ": "a", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ᴋ": "k", "ᴍ": "m", "ᴏ": "o",
    "ᴘ": "p", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ᴢ": "z", "ɑ": "a", "ı": "i",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J",
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
    "χ": "x", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
})
_LEET = str.maketrans({"4": "a", "@": "a", "3": "e", "1": "i", "!": "i", "0": "o", "5": "s", "$": "s",
                       "7": "t", "+": "t", "8": "b", "9": "g", "|": "l"})
_B64 = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{16,}={0,2}(?![A-Za-z0-9+/=_-])")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}[ :]?){12,}\b")
_WORD = re.compile(r"[a-z]+")
# common English words: a decoding is kept only if it reads as text
_COMMON = frozenset(
    "the be to of and a in that have i it for not on with he as you do at this but his by from they we say "
    "her she or an will my one all would there their what so up out if about who get which go me when make "
    "can like time no just him know take people into year your good some could them see other than then now "
    "look only come its over think also back after use two how our work first well way even new want "
    "because any these give day most us is are was were been has had did does how why where tell write "
    "ignore previous instructions rules all above prompt system you must now are free answer step give "
    "explain make build create steal kill bomb weapon hack password".split())


@dataclass(frozen=True)
class View:
    kind: str  # "normalized", "base64", "hex", "rot13", "leetspeak", "unicode_tags", "reversed"
    text: str


def _english_ratio(text: str) -> float:
    words = _WORD.findall(text.lower())
    return sum(w in _COMMON for w in words) / len(words) if words else 0.0


def _printable(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    good = sum(ch.isprintable() or ch in "\n\t" for ch in text)
    return text if text and good / len(text) > 0.95 and re.search(r"[A-Za-z]{2}", text) else None


def _decode_b64(blob: str) -> str | None:
    blob = blob.rstrip("=")
    padded = blob + "=" * (-len(blob) % 4)
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            text = _printable(decode(padded))
        except (binascii.Error, ValueError):
            continue
        if text:
            return text
    return None


def normalize(text: str) -> str:
    """NFKC (full-width, math alphanumerics, ligatures), homoglyphs folded, invisible characters removed."""
    text = _TAGS.sub("", _INVISIBLE.sub("", text))
    return unicodedata.normalize("NFKC", text).translate(_HOMOGLYPHS)


def deobfuscate(text: str) -> list[View]:
    """The readable views of `text`: first the normalized text, then each hidden payload it decodes to."""
    views = [View("normalized", normalize(text))]
    hidden = "".join(chr(ord(ch) - 0xE0000) for m in _TAGS.finditer(text) for ch in m.group())
    if hidden.strip():
        views.append(View("unicode_tags", hidden))
    base = views[0].text
    for m in _B64.finditer(base):
        if re.search(r"[0-9+/=]|[a-z][A-Z]|[A-Z]{2}[a-z]", m.group()):  # looks encoded, not a long word
            decoded = _decode_b64(m.group())
            if decoded and _english_ratio(decoded) >= 0.2:
                views.append(View("base64", decoded))
    for m in _HEX.finditer(base):
        decoded = _printable(bytes.fromhex(re.sub(r"[ :]", "", m.group())))
        if decoded:
            views.append(View("hex", decoded))
    ratio = _english_ratio(base)
    rot = codecs.encode(base, "rot13")
    if _english_ratio(rot) > max(0.25, ratio + 0.15) or re.search(r"(?i)\brot-?13\b", base):
        views.append(View("rot13", rot))
    if re.search(r"[A-Za-z][0-9@$!|+]|[0-9@$|][A-Za-z]", base):  # letters mixed with digits/symbols
        leet = " ".join(w.translate(_LEET) if re.search(r"[A-Za-z]", w) else w for w in base.split())
        if leet != base and _english_ratio(leet) > ratio + 0.1:
            views.append(View("leetspeak", leet))
    backwards = base[::-1]
    if _english_ratio(backwards) > max(0.3, ratio + 0.2):
        views.append(View("reversed", backwards))
    return views


# (name, weight, pattern): weights are evidence strengths, combined as 1 - prod(1 - w)
PATTERNS: list[tuple[str, float, re.Pattern[str]]] = [(n, w, re.compile(p, re.I)) for n, w, p in [
    ("ignore_previous", 0.9, r"\b(ignore|disregard|forget|override|bypass|skip)\b.{0,40}\b(previous|prior|above|"
     r"earlier|preceding|all|any|your|the|system|initial|original)\b.{0,30}\b(instructions?|prompts?|rules|"
     r"directives?|guidelines|constraints|restrictions|programming|context|messages?)\b"),
    ("new_instructions", 0.6, r"\b(new|updated|real|actual|true)\s+(instructions?|rules|system prompt|directive)s?\s*[:\-]"),
    ("reveal_prompt", 0.7, r"\b(reveal|print|show|repeat|output|display|leak|tell me|what (is|are))\b.{0,30}\b(your|the above|the hidden|this chat'?s)"
     r"\b.{0,20}\b(system prompt|initial (prompt|instructions)|hidden (prompt|instructions)|instructions above|"
     r"prompt above|original instructions|pre-?prompt)"),
    ("no_restrictions", 0.45, r"\b(without|no|free (of|from)|not bound by|ignore|remove|disable|turn off)\b.{0,25}"
     r"\b(any |all |your |the )?(restrictions|filters?|censorship|guidelines|safety|limitations|rules|ethics|"
     r"moral(s|ity)?|content polic(y|ies)|guardrails)\b"),
    ("dan", 0.9, r"\b(DAN|do anything now|STAN|DUDE|AntiGPT|BetterDAN|UCAR|Maximum|AIM)\b.{0,200}\b(mode|persona|"
     r"character|jailbr(oken|eak)|no (rules|restrictions|limits)|anything|always intelligent)|\bdo anything now\b"),
    ("developer_mode", 0.8, r"\b(you|chatgpt|assistant|ai|model|llm)\b.{0,40}\b(developer|god|unrestricted|jailbreak|"
     r"evil|opposite|dan)\s+mode\b|\b(developer|god|jailbreak|evil|dan) mode (enabled|output|response)"),
    ("persona_unfiltered", 0.6, r"\b(you are|act as|pretend (to be|you are)|roleplay as|become|you're)\b.{0,40}\b"
     r"(unfiltered|uncensored|unrestricted|jailbroken|amoral|unethical|evil|without (morals|ethics|limits))\b"),
    ("from_now_on", 0.35, r"\bfrom now on\b.{0,60}\b(you (will|are|must|shall)|respond|answer|act)\b"),
    ("stay_in_character", 0.4, r"\b(stay in character|never break character|don'?t break character)\b"),
    ("evil_confidant", 0.8, r"\bevil (confidant|assistant|ai|twin)\b"),
    ("grandma", 0.45, r"\b(dead|deceased|late)\s+(grand(ma|mother|pa|father)|mother|father)\b.{0,80}\b(used to|would)\b"),
    ("hypothetical_bypass", 0.4, r"\b(hypothetical(ly)?|in a fictional world|purely fictional|for a novel)\b.{0,80}"
     r"\b(no (rules|restrictions|ethics)|ignore|without (restrictions|limits))"),
    ("role_spoof", 0.7, r"(<\|im_start\|>\s*system|<\|system\|>|\[/?(SYSTEM|INST)\]|<<SYS>>|^\s*#{2,}\s*(system|"
     r"instruction)s?\s*:?|^\s*system\s*:|<\|start_header_id\|>\s*system)"),
    ("prompt_delimiter", 0.3, r"(-{5,}|={5,}|\*{5,})\s*(end|begin|new)\s+(of\s+)?(prompt|instructions|system)"),
    ("token_smuggle", 0.35, r"\b(respond|answer|reply|output)\b.{0,40}\b(in|using|with)\s+(base64|rot-?13|hex|"
     r"leetspeak|morse|binary|reverse(d)?)\b"),
    ("refusal_suppression", 0.45, r"\b(do not|don'?t|never)\b.{0,20}\b(refuse|apologi[sz]e|say (you )?(can'?t|cannot)|"
     r"include (any )?(warnings?|disclaimers?))\b"),
    ("affirmative_prefix", 0.4, r"\b(start|begin) (your )?(response|reply|answer) with\s+[\"']?(sure|absolutely|"
     r"certainly|of course|here is)"),
]]
_VIEW_EVIDENCE = {"base64": 0.35, "hex": 0.3, "rot13": 0.35, "leetspeak": 0.15, "unicode_tags": 0.7, "reversed": 0.3}


def injection_score(views: Sequence[View], invisible_chars: int = 0) -> tuple[float, list[str]]:
    """(score in [0, 1], evidence names) from pattern hits in every view plus the obfuscation itself."""
    weights: dict[str, float] = {}
    for view in views:
        for name, weight, pattern in PATTERNS:
            if pattern.search(view.text):
                # phrasing that only appears once decoded counts fully: hiding it is itself a signal
                weights[name] = max(weights.get(name, 0.0), weight)
        if view.kind in _VIEW_EVIDENCE:
            weights[f"encoded_{view.kind}"] = _VIEW_EVIDENCE[view.kind]
    if invisible_chars >= 3:
        weights["invisible_chars"] = min(0.2 + 0.05 * invisible_chars, 0.6)
    miss = 1.0
    for w in weights.values():
        miss *= 1.0 - w
    return 1.0 - miss, sorted(weights, key=lambda k: -weights[k])


class InjectionRail:
    """Blocks prompt injection and jailbreak attempts whose evidence score reaches `threshold`."""

    def __init__(self, threshold: float = 0.5, stages: Sequence[Stage] = ("input",), name: str = "injection") -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"injection threshold must be in (0, 1], got {threshold}")
        self.threshold, self.stages, self.name = threshold, tuple(stages), name

    def check(self, texts: Sequence[str], stage: Stage, prompts: Sequence[str | None] | None = None,
              views: Sequence[Sequence[View]] | None = None) -> list[RailVerdict]:
        out = []
        for i, text in enumerate(texts):
            vs = views[i] if views is not None else deobfuscate(text)
            invisible = len(_INVISIBLE.findall(text)) + len(_TAGS.findall(text))
            score, evidence = injection_score(vs, invisible)
            details = {"evidence": evidence, "decoded": [v.kind for v in vs[1:]]}
            if score >= self.threshold:
                reason = "looks like an attempt to override the assistant's instructions (" + ", ".join(evidence[:3]) + ")"
                out.append(RailVerdict(self.name, "block", "prompt_injection", score, reason, details=details))
            else:
                out.append(RailVerdict(self.name, "allow", None, score, details=details))
        return out
