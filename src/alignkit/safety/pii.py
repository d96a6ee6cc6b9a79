"""PII and secrets: find and redact emails, phone numbers, payment cards, IBANs, US SSNs and API keys.

Every candidate that has a checksum is verified, so that order numbers and arithmetic do not get
redacted: card numbers must pass the Luhn check, IBANs the ISO 13616 mod-97 check with the country's
length. Phone numbers need phone-like formatting (a leading +, parentheses or separators) and 10-15
digits, so a bare 12-digit number in a sum is left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

from alignkit.safety.decision import RailVerdict, Stage

__all__ = ["PII_KINDS", "PiiMatch", "find_pii", "redact_pii", "luhn_valid", "iban_valid", "PiiRail"]

PII_KINDS = ("email", "phone", "credit_card", "iban", "ssn", "api_key")
_PLACEHOLDER = {"email": "[EMAIL]", "phone": "[PHONE]", "credit_card": "[CARD]", "iban": "[IBAN]",
                "ssn": "[SSN]", "api_key": "[SECRET]"}

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b")
# 13-19 digits, optionally in groups separated by one space or dash
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}\b")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,5}){1,4}(?![\w])"
                    r"|(?<![\w+])\+\d{10,15}(?!\w)")
# provider token formats (prefixes are public documentation of each provider)
_API_KEYS = [
    ("openai", r"sk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}"),
    ("anthropic", r"sk-ant-[A-Za-z0-9_-]{20,}"),
    ("aws_access_key", r"(?:AKIA|ASIA)[0-9A-Z]{16}"),
    ("github", r"gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}"),
    ("gitlab", r"glpat-[A-Za-z0-9_-]{20}"),
    ("slack", r"xox[abposr]-[A-Za-z0-9-]{10,}"),
    ("google", r"AIza[0-9A-Za-z_-]{35}"),
    ("stripe", r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"),
    ("huggingface", r"hf_[A-Za-z0-9]{30,}"),
    ("jwt", r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ("private_key", r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z]+ )?PRIVATE KEY-----"),
]
_API = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in _API_KEYS))
# secrets recognised by their context: only the value (group 1) is redacted, the label stays readable
_CONTEXT_SECRETS = [
    ("bearer", re.compile(r"\bBearer\s+([A-Za-z0-9._~+/-]{20,}=*)")),
    ("assigned_secret", re.compile(r"(?i)\b(?:api[_-]?key|secret|token|password|passwd)[\"']?\s{0,3}[:=]\s{0,3}"
                                   r"[\"']?([A-Za-z0-9._~+/!@#$%^&*-]{8,})")),
]

# ISO 13616 IBAN lengths per country (the registry's published table)
_IBAN_LENGTH = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


@dataclass(frozen=True)
class PiiMatch:
    kind: str  # one of PII_KINDS
    start: int
    end: int
    value: str
    subtype: str = ""  # api_key: the provider

    @property
    def placeholder(self) -> str:
        return _PLACEHOLDER[self.kind]


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check used by payment card numbers."""
    if not digits.isdigit() or len(digits) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616: known country, its exact length, and mod-97 of the rearranged number equal to 1."""
    iban = re.sub(r"\s", "", text).upper()
    if len(iban) < 15 or _IBAN_LENGTH.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _cards(text: str) -> Iterable[PiiMatch]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"[ -]", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits) and len(set(digits)) > 1:
            yield PiiMatch("credit_card", m.start(), m.end(), m.group())


def _ibans(text: str) -> Iterable[PiiMatch]:
    for m in _IBAN.finditer(text):
        value = m.group()
        # the regex may run into a following word: shrink from the right until the checksum holds
        while value and not iban_valid(value) and len(re.sub(r"\s", "", value)) > 15:
            value = value[:-1].rstrip()
        if iban_valid(value):
            yield PiiMatch("iban", m.start(), m.start() + len(value), value)


def _phones(text: str) -> Iterable[PiiMatch]:
    for m in _PHONE.finditer(text):
        value = m.group()
        digits = re.sub(r"\D", "", value)
        formatted = value.startswith("+") or "(" in value or len(re.findall(r"[ .-]", value)) >= 2
        if 10 <= len(digits) <= 15 and formatted and not re.fullmatch(r"\d{4}[-./]\d{2}[-./]\d{2}", value):
            yield PiiMatch("phone", m.start(), m.end(), value)


def _api_keys(text: str) -> Iterable[PiiMatch]:
    for m in _API.finditer(text):
        yield PiiMatch("api_key", m.start(), m.end(), m.group(), subtype=m.lastgroup or "")
    for name, pattern in _CONTEXT_SECRETS:
        for m in pattern.finditer(text):
            yield PiiMatch("api_key", m.start(1), m.end(1), m.group(1), subtype=name)


def find_pii(text: str, kinds: Sequence[str] = PII_KINDS) -> list[PiiMatch]:
    """Non-overlapping matches in text order; on overlap the earlier-listed, more specific kind wins."""
    unknown = set(kinds) - set(PII_KINDS)
    if unknown:
        raise ValueError(f"unknown PII kind(s) {sorted(unknown)}; known: {', '.join(PII_KINDS)}")
    finders = {"api_key": _api_keys, "email": lambda t: (PiiMatch("email", m.start(), m.end(), m.group())
                                                         for m in _EMAIL.finditer(t)),
               "iban": _ibans, "credit_card": _cards,
               "ssn": lambda t: (PiiMatch("ssn", m.start(), m.end(), m.group()) for m in _SSN.finditer(t)),
               "phone": _phones}
    taken: list[PiiMatch] = []
    for kind in finders:  # priority order: secrets, emails, IBANs, cards, SSNs, then phones
        if kind in kinds:
            for match in finders[kind](text):
                if all(match.end <= t.start or match.start >= t.end for t in taken):
                    taken.append(match)
    return sorted(taken, key=lambda m: m.start)


def redact_pii(text: str, kinds: Sequence[str] = PII_KINDS) -> tuple[str, list[PiiMatch]]:
    """Replace each match with its placeholder ("[EMAIL]", "[CARD]", ...); returns (text, matches)."""
    matches = find_pii(text, kinds)
    out, pos = [], 0
    for m in matches:
        out += [text[pos : m.start], m.placeholder]
        pos = m.end
    out.append(text[pos:])
    return "".join(out), matches


class PiiRail:
    """Redacts PII (action `rewrite`) or blocks messages that contain it (action `block`)."""

    def __init__(self, kinds: Sequence[str] = PII_KINDS, action: Literal["redact", "block"] = "redact",
                 stages: Sequence[Stage] = ("input", "output"), name: str = "pii") -> None:
        find_pii("", kinds)  # validates the kinds
        self.kinds, self.action, self.stages, self.name = tuple(kinds), action, tuple(stages), name

    def check(self, texts: Sequence[str], stage: Stage,
              prompts: Sequence[str | None] | None = None) -> list[RailVerdict]:
        out = []
        for text in texts:
            redacted, matches = redact_pii(text, self.kinds)
            if not matches:
                out.append(RailVerdict(self.name))
                continue
            found = sorted({m.kind for m in matches})
            # never log the values themselves: kinds and counts only
            details = {"kinds": found, "count": len(matches)}
            reason = "contains " + ", ".join(k.replace("_", " ") for k in found)
            if self.action == "block":
                out.append(RailVerdict(self.name, "block", "pii", 1.0, reason, details=details))
            else:
                out.append(RailVerdict(self.name, "rewrite", "pii", 1.0, reason, text=redacted, details=details))
        return out
