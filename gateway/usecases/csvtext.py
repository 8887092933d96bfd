"""A CSV body's records, from its lines as they stream in: its encoding told, quoted cells
that span lines joined, and each record with the number of the line it starts on.

Banks' CSVs come from Excel: UTF-8 with a BOM ("CSV UTF-8"), GBK without one (a Chinese
Windows' "CSV"), or UTF-8 without one (written by scripts). A client may say which
(``charset``); otherwise a BOM says UTF-8, and with neither the lines say (``Charset``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator

# Declared charsets; GB18030 is the superset GBK and GB2312 files are read with.
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
# told), at most this many, or this many bytes; then the evidence so far decides.
HOLD_LINES = 1000
HOLD_BYTES = 256 * 1024


def charset_of(declared: str | None) -> str:
    """The codec for a declared ``charset`` (``auto`` when none or unknown)."""
    return CHARSETS.get((declared or "").strip().lower(), "auto")


def _in_word(text: str, i: int) -> bool:
    """Whether the letter at ``i`` has a letter beside it (``ü`` in ``Müller``; GBK's ``女``
    read as UTF-8 is a lone ``Ů``)."""
    return (i > 0 and text[i - 1].isalpha()) or (i + 1 < len(text) and text[i + 1].isalpha())


def plausibility(text: str) -> tuple[int, int]:
    """(plausible, all) of ``text``'s characters that are not ASCII. Plausible in a list of
    bank customers: Chinese characters (GB2312's two levels), Chinese punctuation and
    fullwidth forms, the middle dot of transliterated names, dashes and quotes, and Latin
    letters with accents inside words. UTF-8 read as GBK gives kana, box drawing and rare
    characters (``周婷`` reads ``鍛ㄥ┓``); GBK read as UTF-8 gives lone letters of other
    scripts (``女`` reads ``Ů``, ``小`` ``С``) and combining marks (``太原`` reads ``̫ԭ``)."""
    count = hits = 0
    for i, c in enumerate(text):
        if c.isascii():
            continue
        count += 1
        o = ord(c)
        if 0xC0 <= o <= 0x24F:  # Latin-1 and Latin Extended-A/B
            hits += c.isalpha() and _in_word(text, i)
            continue
        if o == 0xB7 or 0x2010 <= o <= 0x2027:
            hits += 1
            continue
        try:
            lead = c.encode("gb2312")[0]
        except UnicodeEncodeError:
            continue
        hits += 0xA1 <= lead <= 0xA3 or 0xB0 <= lead <= 0xF7  # punctuation, fullwidth; hanzi
    return hits, count


class Charset:
    """A CSV's encoding: ``utf-8``, ``gb18030``, or ``auto`` until its lines tell.

    A line that decodes only one way tells. Many decode both ways (UTF-8 ``上海`` is GBK for
    ``涓婃捣``; GBK ``太原`` is UTF-8 for two combining marks); while only such lines have
    come, they are held, and their ``plausibility`` read both ways is added up; after
    ``HOLD_LINES`` lines or ``HOLD_BYTES`` bytes, or at the end, the way that gave the more
    plausible text decides (UTF-8 when they tie). Once told, a line that is not text in
    that encoding is refused, with a reason; it does not change the encoding.
    """

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._held: list[tuple[int, bytes]] = []
        self._held_bytes = 0
        self._utf8 = [0, 0]  # plausible, all: the held lines read as UTF-8
        self._gbk = [0, 0]  # and as GBK

    def feed(self, number: int, raw: bytes) -> list[tuple[int, str, str | None]]:
        """The lines that can be read now: (number, text, why it is not text or None)."""
        if self.encoding != "auto":
            return [self._decode(number, raw)]
        if not self._held and raw.isascii():
            return [(number, raw.decode("ascii"), None)]
        self._held.append((number, raw))
        self._held_bytes += len(raw)
        if not raw.isascii():
            self._weigh(raw)
        if self.encoding == "auto":
            if len(self._held) < HOLD_LINES and self._held_bytes < HOLD_BYTES:
                return []
            self.encoding = self._likelier()
        return self._release()

    def finish(self) -> list[tuple[int, str, str | None]]:
        """The lines still held, read the likelier way."""
        if self.encoding == "auto" and self._held:
            self.encoding = self._likelier()
        return self._release()

    def _weigh(self, raw: bytes) -> None:
        try:
            as_utf8: str | None = raw.decode("utf-8")
        except UnicodeDecodeError:
            as_utf8 = None
        try:
            as_gbk: str | None = raw.decode("gb18030")
        except UnicodeDecodeError:
            as_gbk = None
        if as_utf8 is None or as_gbk is None:  # one way only tells; neither tells nothing
            if as_utf8 is not None or as_gbk is not None:
                self.encoding = "utf-8" if as_utf8 is not None else "gb18030"
            return
        for total, text in ((self._utf8, as_utf8), (self._gbk, as_gbk)):
            hits, count = plausibility(text)
            total[0] += hits
            total[1] += count

    def _likelier(self) -> str:
        (u_hits, u_all), (g_hits, g_all) = self._utf8, self._gbk
        return "utf-8" if u_hits * max(g_all, 1) >= g_hits * max(u_all, 1) else "gb18030"

    def _release(self) -> list[tuple[int, str, str | None]]:
        held, self._held, self._held_bytes = self._held, [], 0
        return [self._decode(n, raw) for n, raw in held]

    def _decode(self, number: int, raw: bytes) -> tuple[int, str, str | None]:
        if raw.isascii():
            return number, raw.decode("ascii"), None
        try:
            return number, raw.decode(self.encoding), None
        except UnicodeDecodeError:
            other = "gb18030" if self.encoding == "utf-8" else "utf-8"
            try:
                raw.decode(other)
            except UnicodeDecodeError:
                why = f"line {number} is neither UTF-8 nor GBK text"
            else:
                name = "UTF-8" if self.encoding == "utf-8" else "GBK"
                why = f"line {number} is not {name} text, the file's encoding"
            return number, raw.decode(self.encoding, errors="replace"), why


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
