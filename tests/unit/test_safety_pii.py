"""PII detection and redaction: checksums decide, formatting matters, values never reach verdict details."""

from __future__ import annotations

import pytest

from alignkit.safety.pii import PiiRail, find_pii, iban_valid, luhn_valid, redact_pii


def test_luhn_on_known_numbers():
    assert luhn_valid("4111111111111111")  # Visa test number
    assert luhn_valid("79927398713")  # the textbook example
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("79927398710")
    assert not luhn_valid("4111-1111")


def test_iban_mod97_and_country_length():
    assert iban_valid("GB82 WEST 1234 5698 7654 32")
    assert iban_valid("DE89370400440532013000")
    assert not iban_valid("GB82 WEST 1234 5698 7654 33")  # check digits wrong
    assert not iban_valid("DE8937040044053201300")  # one digit short for DE
    assert not iban_valid("ZZ82WEST12345698765432")  # unknown country


@pytest.mark.parametrize("text, kind, placeholder", [
    ("write to jane.doe+news@example.co.uk today", "email", "[EMAIL]"),
    ("call +1 (415) 555-0132 after six", "phone", "[PHONE]"),
    ("or 020 7946 0958", "phone", "[PHONE]"),
    ("card 4111 1111 1111 1111 exp 12/29", "credit_card", "[CARD]"),
    ("pay to GB82 WEST 1234 5698 7654 32 please", "iban", "[IBAN]"),
    ("ssn 123-45-6789", "ssn", "[SSN]"),
    ("key sk-proj-abcdefghijklmnopqrstuvwx12", "api_key", "[SECRET]"),
    ("aws AKIAIOSFODNN7EXAMPLE", "api_key", "[SECRET]"),
    ("token ghp_" + "a" * 36, "api_key", "[SECRET]"),
    ('api_key = "abcd1234efgh5678ijkl"', "api_key", "[SECRET]"),
    ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345", "api_key", "[SECRET]"),
])
def test_each_kind_is_found_and_redacted(text, kind, placeholder):
    redacted, matches = redact_pii(text)
    assert [m.kind for m in matches] == [kind]
    assert placeholder in redacted
    assert matches[0].value not in redacted


@pytest.mark.parametrize("text", [
    "The answer is 123456789012 and the date is 2024-01-15.",
    "pi is 3.14159265358979 and e is 2.718281828",
    "card 4111 1111 1111 1112 fails the Luhn check",
    "ISBN 978-3-16-148410-0 and 1,234,567 people",
    "Compute 12 + 345 - 6789, then 3 4 5 6 7.",
    "Use an at sign like user@localhost in config files",
])
def test_no_false_positives_on_ordinary_numbers(text):
    assert find_pii(text) == []


def test_overlaps_resolve_to_the_specific_kind():
    matches = find_pii("IBAN DE89370400440532013000 and card 4111111111111111")
    assert [m.kind for m in matches] == ["iban", "credit_card"]


def test_kinds_are_validated_and_selectable():
    with pytest.raises(ValueError, match="unknown PII kind"):
        find_pii("x", ["email", "passport"])
    assert [m.kind for m in find_pii("a@b.io 4111111111111111", ["credit_card"])] == ["credit_card"]


def test_rail_redacts_or_blocks_without_leaking_values():
    text = "my card is 4111 1111 1111 1111"
    rewrite = PiiRail().check([text], "input")[0]
    assert rewrite.action == "rewrite" and rewrite.text == "my card is [CARD]"
    block = PiiRail(action="block").check([text], "input")[0]
    assert block.action == "block" and block.category == "pii"
    assert "4111" not in str(block.details) + block.reason
    assert PiiRail().check(["hello there"], "input")[0].action == "allow"
