"""A CSV body's records, from its lines as they stream in: its encoding told, quoted cells
that span lines joined, and each record with the number of the line it starts on.

Banks' CSVs come from Excel: UTF-8 with a BOM ("CSV UTF-8"), GBK without one (a Chinese
Windows' "CSV"), or UTF-8 without one (written by scripts). A BOM says UTF-8, whatever was
declared; otherwise a declared ``charset`` says which, and with neither the lines say
(``Charset``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator

# Declared charsets; GB18030 is the superset GBK and GB2312 files are read with (it has no
# euro sign at 0x80, which Windows' cp936 has: such a line is refused, as neither UTF-8 nor
# GBK text).
CHARSETS = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "gbk": "gb18030",
    "gb2312": "gb18030",
    "gb18030": "gb18030",
    "cp936": "gb18030",
}
BOM = b"\xef\xbb\xbf"
MAX_CSV_RECORD = 64 * 1024  # characters of one CSV record, however many lines it spans
# While no line has told the encoding, lines are held (to be read all one way once it is
# told): until this many of them decode both ways, or this many bytes are held (and the line
# that passed it, at most the request's longest line); then the evidence so far decides, for
# now (see ``Charset``).
HOLD_LINES = 1000
HOLD_BYTES = 256 * 1024
# Decoding both ways is itself a sign of UTF-8: Chinese in UTF-8 reads as GBK too whenever
# its runs of characters are even (and mostly fails when one is odd: 王小明, 女), while GBK
# text reads as UTF-8 only by chance (for a name, a few times in a hundred).
# So GBK is taken only if it reads more plausibly by this much (share of the characters).
# On 38,000 names of common surnames and given names, one line each: none misread either
# way with 0.25 (32 in UTF-8 with no margin; 4 in GBK with 0.5).
GBK_MARGIN = 0.25


def charset_of(declared: str | None) -> str:
    """The codec for a declared ``charset`` (``auto`` when none or unknown)."""
    return CHARSETS.get((declared or "").strip().lower(), "auto")


def _beside(text: str, i: int, letter: Callable[[str], bool]) -> tuple[bool, bool]:
    """Whether the characters before and after ``i`` are letters, by ``letter``."""
    return (i > 0 and letter(text[i - 1])), (i + 1 < len(text) and letter(text[i + 1]))


def _ascii_letter(c: str) -> bool:
    return c.isascii() and c.isalpha()


# How much a character that is not ASCII counts for a reading: common Chinese characters
# (GB2312's first level, 3,755 of them, nearly all of any Chinese text) and Chinese
# punctuation and fullwidth forms count whole; GB2312's second level and the Chinese
# characters outside GB2312 (玥, 喆, 堃 in names) a quarter; other symbols nothing.
_LEVEL_2 = 0.25


def plausibility(text: str) -> tuple[float, int]:
    """(how plausible, how many) of ``text``'s characters that are not ASCII, as text in a
    list of bank customers (see the weights above; Latin letters with accents count when an
    ASCII letter is beside them, as in ``Müller``, and a middle dot between two letters, as
    in ``阿·买``). UTF-8 read as GBK gives kana, box drawing and rare characters (``周婷``
    reads ``鍛ㄥ┓``); GBK read as UTF-8 gives letters of other scripts, alone or in pairs
    (``女`` reads ``Ů``, ``钱强`` ``Ǯǿ``), Latin-1 symbols (``路`` reads ``·``) and combining
    marks (``太原`` reads ``̫ԭ``)."""
    count, score = 0, 0.0
    for i, c in enumerate(text):
        if c.isascii():
            continue
        count += 1
        o = ord(c)
        if o <= 0x24F:  # Latin-1 and Latin Extended-A/B
            if c.isalpha():  # Extended-B's letters (Ⱥ, ƽ, Ǯ) are GBK read as UTF-8
                score += o <= 0x17F and any(_beside(text, i, _ascii_letter))
            elif o == 0xB7:  # the middle dot
                score += all(_beside(text, i, str.isalpha))
            elif o == 0xA5:  # the yuan sign, before an amount (Excel's currency format)
                score += i + 1 < len(text) and text[i + 1].isdigit()
            continue
        if 0x2010 <= o <= 0x2027:  # dashes, quotes, the ellipsis
            score += 1
            continue
        try:
            lead = c.encode("gb2312")[0]
        except UnicodeEncodeError:
            score += _LEVEL_2 if 0x4E00 <= o <= 0x9FFF else 0
            continue
        if 0xA1 <= lead <= 0xA3 or 0xB0 <= lead <= 0xD7:  # punctuation, fullwidth; level 1
            score += 1
        elif 0xD8 <= lead <= 0xF7:
            score += _LEVEL_2
    return score, count


class Charset:
    """A CSV's encoding: ``utf-8``, ``gb18030``, or ``auto`` until its lines tell.

    A line that decodes only one way tells. Many decode both ways (UTF-8 ``上海`` is GBK for
    ``涓婃捣``; GBK ``太原`` is UTF-8 for two combining marks); while only such lines have
    come, they are held (and every line after them, to keep the order), and their
    ``plausibility`` read both ways is added up. After ``HOLD_LINES`` such lines or
    ``HOLD_BYTES`` bytes held, or at the end, the way that gave the more plausible text is
    taken (GBK only by ``GBK_MARGIN``): a guess, which the first line that decodes only the
    other way overturns, for itself and the lines after it. A told encoding holds: a line that
    is not text in it is refused, with a reason.
    """

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.guessed = False  # taken on the evidence of ambiguous lines, not told
        self._held: list[tuple[int, bytes]] = []
        self._held_bytes = 0
        self._ambiguous = 0  # held lines that decode both ways
        self._utf8 = [0.0, 0]  # how plausible, how many: the held lines read as UTF-8
        self._gbk = [0.0, 0]  # and as GBK

    def feed(self, number: int, raw: bytes) -> list[tuple[int, str, str | None]]:
        """The lines that can be read now: (number, text, why it is not text or None)."""
        if self.encoding != "auto":
            if self.guessed and not raw.isascii():
                self._overturn(raw)
            return [self._decode(number, raw)]
        if not self._held and raw.isascii():
            return [(number, raw.decode("ascii"), None)]
        self._held.append((number, raw))
        self._held_bytes += len(raw)
        if not raw.isascii():
            self._weigh(raw)
        if self.encoding == "auto":
            if self._ambiguous < HOLD_LINES and self._held_bytes < HOLD_BYTES:
                return []
            self._guess()
        return self._release()

    def finish(self) -> list[tuple[int, str, str | None]]:
        """The lines still held, read the likelier way."""
        if self.encoding == "auto" and self._held:
            self._guess()
        return self._release()

    def _weigh(self, raw: bytes) -> None:
        as_utf8, as_gbk = _readings(raw)
        if as_utf8 is None or as_gbk is None:  # one way only tells; neither tells nothing
            self.encoding = _only_way(as_utf8, as_gbk) or self.encoding
            return
        self._ambiguous += 1
        for total, text in ((self._utf8, as_utf8), (self._gbk, as_gbk)):
            score, count = plausibility(text)
            total[0] += score
            total[1] += count

    def _guess(self) -> None:
        (u_score, u_all), (g_score, g_all) = self._utf8, self._gbk
        as_utf8 = u_score / u_all if u_all else 1.0
        as_gbk = g_score / g_all if g_all else 1.0
        # (nothing plausible as UTF-8, as with GBK's 馨 read as a Syriac letter: GBK, if it
        # reads as anything)
        gbk = as_gbk - as_utf8 > GBK_MARGIN or (as_utf8 == 0 and as_gbk > 0)
        self.encoding = "gb18030" if gbk else "utf-8"
        self.guessed = True

    def _overturn(self, raw: bytes) -> None:
        """After a guess, a line that decodes only the other way tells."""
        told = _only_way(*_readings(raw))
        if told is not None:
            self.encoding, self.guessed = told, False

    def _release(self) -> list[tuple[int, str, str | None]]:
        held, self._held, self._held_bytes = self._held, [], 0
        return [self._decode(n, raw) for n, raw in held]

    def _decode(self, number: int, raw: bytes) -> tuple[int, str, str | None]:
        if raw.isascii():
            return number, raw.decode("ascii"), None
        try:
            return number, raw.decode(self.encoding), None
        except UnicodeDecodeError:
            if _only_way(*_readings(raw)) is None:
                why = f"line {number} is neither UTF-8 nor GBK text"
            else:
                name = "UTF-8" if self.encoding == "utf-8" else "GBK"
                why = f"line {number} is not {name} text, the file's encoding"
            return number, _skeleton(raw), why


def _readings(raw: bytes) -> tuple[str | None, str | None]:
    """The line read as UTF-8 and as GBK, each None where it is not that text."""
    try:
        as_utf8: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        as_utf8 = None
    try:
        as_gbk: str | None = raw.decode("gb18030")
    except UnicodeDecodeError:
        as_gbk = None
    return as_utf8, as_gbk


def _only_way(as_utf8: str | None, as_gbk: str | None) -> str | None:
    """The encoding a line tells: the one of two readings that is text, if only one is."""
    if (as_utf8 is None) == (as_gbk is None):
        return None
    return "utf-8" if as_utf8 is not None else "gb18030"


def _skeleton(raw: bytes) -> str:
    """A line that is not text, with every byte that is not ASCII made ``?``: its quotes and
    commas are where they were (neither is ever part of a GBK or UTF-8 character), so the
    record it belongs to still ends where it does. (A decoder's replacements may swallow
    them: GB18030 reads a lead byte, a digit and a quote at the end as one broken
    four-byte character.)"""
    return raw.translate(_NOT_ASCII).decode("ascii")


_NOT_ASCII = bytes(range(128)) + b"?" * 128


def still_quoted(line: str, quoted: bool) -> bool:
    """Whether a CSV record is inside a quoted cell after ``line``, by the csv module's
    rules: a cell is quoted only if it starts with a quote (``小"明`` is a plain cell), and
    ``""`` inside a quoted cell is one quote."""
    at_start = not quoted  # a line not inside quotes starts a cell
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if quoted:
            if c == '"':
                if i + 1 < n and line[i + 1] == '"':
                    i += 2
                    continue
                quoted = False
        elif c == ",":
            at_start = True
            i += 1
            continue
        elif c == '"' and at_start:
            quoted = True
        at_start = False
        i += 1
    return quoted


Record = tuple[int, "str | ValueError"]  # the line it starts on; its text, or why not


class CsvRecords:
    """Records from lines: a quoted cell may span lines (Excel writes them so); a record
    with a line that is not text is refused whole, at its first line, once its quoted
    cell ends, so that the rest of that cell is not read as records of its own."""

    def __init__(self, charset: str | None) -> None:
        self.charset = Charset(charset_of(charset))
        self._parts: list[str] = []
        self._first = 0
        self._quoted = False
        self._size = 0
        self._bad: str | None = None

    def feed(self, number: int, raw: bytes) -> Iterator[Record]:
        if number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
            self.charset.encoding = "utf-8"
        for line in self.charset.feed(number, raw):
            yield from self._line(*line)

    def finish(self) -> Iterator[Record]:
        for line in self.charset.finish():
            yield from self._line(*line)
        if self._parts:
            self._parts = []
            yield self._first, ValueError(self._bad or "a quoted cell is never closed")

    def _line(self, number: int, text: str, bad: str | None) -> Iterator[Record]:
        if not self._parts:
            if bad is None and not text.strip():  # a blank line between records
                return
            self._first, self._quoted, self._size, self._bad = number, False, 0, None
        part = text.rstrip("\r\n")
        self._parts.append(part)
        self._bad = self._bad or bad
        if '"' in part:
            self._quoted = still_quoted(part, self._quoted)
        self._size += len(part) + (len(self._parts) > 1)  # the line breaks between
        if self._size > MAX_CSV_RECORD:  # an unclosed quote, or cells too large
            self._parts = []
            if self._quoted:
                why = f"a quoted cell is not closed within {MAX_CSV_RECORD:,} characters"
            else:
                why = f"a record of more than {MAX_CSV_RECORD:,} characters"
            yield self._first, ValueError(self._bad or why)
            return
        if self._quoted:  # inside a quoted cell: the record goes on
            return
        record = "\n".join(self._parts)
        self._parts = []
        yield self._first, ValueError(self._bad) if self._bad else record


def cells(text: str) -> list[str]:
    """A CSV record's cells; a record the csv module cannot read is a ``ValueError``."""
    try:
        return next(csv.reader([text]))
    except csv.Error as exc:
        if "new-line" in str(exc):
            raise ValueError(
                "a line break inside a cell that is not quoted (lines end in LF or CRLF;"
                " a lone CR, as old Mac Excel writes, is not a line end)"
            ) from None
        raise ValueError(f"not a CSV record: {exc}") from None
