"""The plain-SMS face of a card: signature first, a tracked link, an opt-out line, segments.

Encoding and length follow 3GPP TS 23.038: text the GSM 03.38 alphabet can carry is
GSM-7 (160 septets in one SMS, 153 per part when concatenated; characters of the
extension table take two septets), anything else is UCS-2 (70 UTF-16 units, 67 per
part). The codec is the maintained ``gsm0338`` package, not a hand-made table.
"""

from __future__ import annotations

from dataclasses import dataclass

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

OPT_OUT_LINE = "回T退订"
OPT_OUT_HINTS = ("回T退订", "退订", "拒收请回复R", "回R拒收")


@dataclass(frozen=True, slots=True)
class SmsLength:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets or UTF-16 code units
    segments: int


def compose(
    signature: str, text: str, *, marketing: bool, link: str | None, link_in_text: bool
) -> str:
    """The SMS text: the bank's signature, the text, the link if the text left it out,
    and for marketing an opt-out line unless the text already has one."""
    body = text.strip()
    if link and not link_in_text:
        body = _join(body, f"详情 {link}")
    if marketing and not any(hint in body for hint in OPT_OUT_HINTS):
        body = _join(body, OPT_OUT_LINE)
    return f"{signature}{body}"


def _join(text: str, more: str) -> str:
    """After Chinese punctuation no space is needed (or wanted); after anything else one is."""
    if not text or text[-1] in "。！？，；：、）】」』”":
        return text + more
    return f"{text} {more}"


_SEPTETS: dict[str, int] = {}  # each character's GSM-7 cost, as the codec says (0: none)


def _septets(c: str) -> int:
    cost = _SEPTETS.get(c)
    if cost is None:
        try:
            cost = len(c.encode("gsm03.38"))
        except UnicodeEncodeError:
            cost = 0
        if len(_SEPTETS) < 4096:
            _SEPTETS[c] = cost
    return cost


def length(text: str) -> SmsLength:
    """Encoding, units and segments. Each character's GSM-7 cost comes from the codec once
    and is remembered: encoding whole texts through it costs ~25 µs a message."""
    units = 0
    for c in text:
        cost = _septets(c)
        if not cost:
            ucs2 = len(text.encode("utf-16-le")) // 2
            return SmsLength("UCS-2", ucs2, 1 if ucs2 <= 70 else -(-ucs2 // 67))
        units += cost
    return SmsLength("GSM-7", units, 1 if units <= 160 else -(-units // 153))
