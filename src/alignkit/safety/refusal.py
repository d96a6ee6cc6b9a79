"""Refusals that explain themselves: the reason (from the constitution's hazard) plus a safe alternative.

The constitution asks for "harmless but non-evasive": a blocked request should say briefly what the
concern is and offer the most useful safe help. The alternatives below are alignkit's defaults per hazard;
a policy can override any of them (`refusal.alternatives`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from alignkit.feedback.constitution import Constitution

__all__ = ["ALTERNATIVES", "refusal_reason", "refusal_message"]

ALTERNATIVES: dict[str, str] = {
    "violent_crimes": "If you or someone else is in danger, please contact local emergency services. I'm glad to "
                      "help with conflict de-escalation, personal safety, or how the justice system handles violence.",
    "non_violent_crimes": "I can explain how these schemes work at a high level so you can protect yourself, or "
                          "help with the legal way to reach the same goal.",
    "sex_crimes": "If this involves you or someone you know, a sexual assault hotline (such as RAINN in the US) can "
                  "help confidentially. I can share information on consent, support services and reporting options.",
    "child_exploitation": "If a child may be at risk, please contact local authorities or a child-protection "
                          "hotline. I can share resources on keeping children safe online and offline.",
    "defamation": "I can help you write something factual and clearly sourced, an opinion piece labelled as "
                  "opinion, or obvious satire that nobody would mistake for fact.",
    "specialized_advice": "Please talk to a qualified professional (a doctor, pharmacist, lawyer or financial "
                          "adviser), or emergency services if it is urgent. I can share general background "
                          "information and questions worth asking them.",
    "privacy": "I can explain how to protect your own privacy, or how to reach someone through public or official "
               "channels that respect their consent.",
    "intellectual_property": "I can summarise the work, quote a short passage, discuss it, or point you to legal ways "
                             "to access it.",
    "indiscriminate_weapons": "I'm happy to discuss the history, policy and public-safety side of these weapons, or "
                              "chemistry and biology topics that carry no such risk.",
    "hate": "I can help you discuss this topic respectfully, explain the history and effects of prejudice, or write "
            "something persuasive that does not demean a group of people.",
    "self_harm": "You don't have to go through this alone. Please reach out to someone you trust or a crisis line "
                 "(988 in the US, 116 123 in the UK and Ireland, or your local emergency number). I'm here to talk "
                 "about what you're going through.",
    "sexual_content": "I can help with romance or relationships in a non-explicit way, or with factual sexual-health "
                      "information.",
    "elections": "For accurate voting information, check your official election authority's website (for example "
                 "vote.gov in the US). I can explain how registration, voting and counting work.",
    "code_interpreter_abuse": "I can help you write and run code that works safely within this environment, or "
                              "explain how sandboxes and resource limits protect systems.",
    "prompt_injection": "I'm happy to help with your actual request if you ask it directly.",
    "pii": "Please remove personal data such as card numbers, account numbers, passwords or keys, and ask again.",
}
_GENERIC = "I'm happy to help with a related question that doesn't carry this risk."


def refusal_reason(category: str | None, constitution: "Constitution | None" = None) -> str:
    """One sentence naming the concern, using the constitution's hazard name and description."""
    if category == "prompt_injection":
        return "the message tries to override my instructions"
    if category == "pii":
        return "the message contains personal or secret data that should not be shared"
    if category and constitution is not None:
        try:
            hazard = constitution.hazard(category)
        except KeyError:
            return "it could cause serious harm"
        return f"it falls under {hazard.name.lower()}: {hazard.description[0].lower()}{hazard.description[1:]}"
    return "it could cause serious harm"


def refusal_message(category: str | None, constitution: "Constitution | None" = None, *, stage: str = "input",
                    alternatives: Mapping[str, str] | None = None, include_alternative: bool = True) -> tuple[str, str, str]:
    """(message, reason, alternative): the text shown to the user when a message is blocked."""
    reason = refusal_reason(category, constitution)
    table = {**ALTERNATIVES, **(alternatives or {})}
    alternative = table.get(category or "", _GENERIC) if include_alternative else ""
    what = "help with that request" if stage == "input" else "share that response"
    message = f"I can't {what}, because {reason.rstrip('.')}."
    return (f"{message} {alternative}" if alternative else message), reason, alternative
