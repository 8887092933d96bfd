"""A vendor's template review rules: pure, so they are easy to read and to test.

In order: a banned claim anywhere (card or SMS text) rejects; a marketing
template without an opt-out hint rejects; otherwise the verdict is left to the
(random) manual review.
"""

from __future__ import annotations

from collections.abc import Iterator

BANNED_CLAIMS: tuple[str, ...] = ("保本", "稳赚", "无风险", "保证收益", "guaranteed return")
OPTOUT_HINTS: tuple[str, ...] = ("回T退订", "退订", "拒收请回复R", "回R拒收")


def strings(value: object) -> Iterator[str]:
    """Every string in a JSON value: object keys and values, at any depth."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def rule_verdict(category: str, card: object, sms_text: str) -> str | None:
    """The rejection reason the rules give, or ``None`` if they pass the template."""
    texts = [sms_text, *strings(card)]
    folded = [t.casefold() for t in texts]
    for claim in BANNED_CLAIMS:
        if any(claim.casefold() in t for t in folded):
            return f"banned_claim: {claim}"
    if category == "marketing" and not any(hint in t for t in texts for hint in OPTOUT_HINTS):
        return "missing_optout"
    return None
