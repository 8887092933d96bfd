"""A CSV's encoding told from its lines, and its records joined from them."""

from __future__ import annotations

import pytest

from gateway.usecases import csvtext
from gateway.usecases.csvtext import Charset, CsvRecords, plausibility


def _read(charset: Charset, lines: list[bytes]) -> list[tuple[int, str, str | None]]:
    out = []
    for number, raw in enumerate(lines, 1):
        out += charset.feed(number, raw)
    return out + charset.finish()


@pytest.mark.parametrize(
    ("text", "encoding", "other"),
    [("周婷", "utf-8", "gb18030"), ("女", "gbk", "utf-8"), ("Müller", "utf-8", "gb18030")],
)
def test_plausibility_scores_the_right_reading_no_lower(
    text: str, encoding: str, other: str
) -> None:
    """(Müller ties with GBK's M眉ller: a tie reads UTF-8.)"""
    raw = text.encode(encoding)
    right, wrong = plausibility(raw.decode(encoding)), plausibility(raw.decode(other))
    assert right[0] * wrong[1] >= wrong[0] * right[1], (right, wrong)
    assert text == "Müller" or right[0] * wrong[1] > wrong[0] * right[1]


def test_ambiguous_lines_are_held_until_a_line_tells_then_all_read_that_way() -> None:
    """GBK 女 is valid UTF-8 (Ů); the 男 after it is not: both are read as GBK, in order."""
    charset = Charset("auto")
    assert charset.feed(1, b"phone,x\n") == [(1, "phone,x\n", None)]
    assert charset.feed(2, "1,女\n".encode("gbk")) == []  # held
    assert charset.feed(3, b"2,plain\n") == []  # held behind it, to keep the order
    released = charset.feed(4, "3,男\n".encode("gbk"))
    assert charset.encoding == "gb18030"
    assert released == [(2, "1,女\n", None), (3, "2,plain\n", None), (4, "3,男\n", None)]
    assert charset.feed(5, "4,女\n".encode("gbk")) == [(5, "4,女\n", None)]


def test_held_lines_are_bounded_then_the_evidence_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csvtext, "HOLD_LINES", 3)
    charset = Charset("auto")
    lines = ["1,周婷\n", "2,王芳\n", "3,李娜\n", "4,上海\n"]
    out = [charset.feed(i, line.encode()) for i, line in enumerate(lines, 1)]
    assert out[:2] == [[], []] and len(out[2]) == 3  # the third held line releases them
    assert charset.encoding == "utf-8"
    assert [t for _, t, _ in out[2] + out[3]] == lines


def test_a_guess_is_overturned_by_a_line_that_decodes_one_way_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A guess (here forced after one ambiguous line) holds only until a line tells: the
    lines after that are read the way it told; a told encoding is not overturned."""
    monkeypatch.setattr(csvtext, "HOLD_LINES", 1)
    charset = Charset("auto")
    assert charset.feed(1, "1,周婷\n".encode()) == [(1, "1,周婷\n", None)]
    assert (charset.encoding, charset.guessed) == ("utf-8", True)
    assert charset.feed(2, "2,男\n".encode("gbk")) == [(2, "2,男\n", None)]
    assert (charset.encoding, charset.guessed) == ("gb18030", False)
    assert charset.feed(3, "3,女\n".encode("gbk")) == [(3, "3,女\n", None)]
    ((_, _, why),) = charset.feed(4, "4,上海\n".encode()[:-2] + b"\n")  # cut mid-character
    assert why is not None and charset.encoding == "gb18030"


def test_the_end_decides_what_is_still_held_and_no_evidence_reads_utf8() -> None:
    charset = Charset("auto")
    assert _read(charset, ["1,王芳\n".encode("gbk")])[0][1] == "1,王芳\n"
    assert charset.encoding == "gb18030"
    nothing = Charset("auto")
    ((_, _, why),) = _read(nothing, [b"1,\xff\xfe\n"])
    assert nothing.encoding == "utf-8" and why == "line 1 is neither UTF-8 nor GBK text"


def test_once_told_a_line_of_the_other_encoding_is_refused_not_followed() -> None:
    charset = Charset("utf-8")
    lines = ["1,上海\n".encode(), "2,太原\n".encode("gbk")[:-1] + b"\xb3\n", "3,北京\n".encode()]
    out = _read(charset, lines)
    assert [why is None for _, _, why in out] == [True, False, True]
    assert out[2][1] == "3,北京\n" and charset.encoding == "utf-8"


def _records(lines: list[bytes], charset: str | None = None) -> list[tuple[int, str]]:
    records = CsvRecords(charset)
    out = []
    for number, raw in enumerate(lines, 1):
        out += list(records.feed(number, raw))
    out += list(records.finish())
    return [(n, r if isinstance(r, str) else f"error: {r}") for n, r in out]


def test_records_join_quoted_cells_skip_blank_lines_and_keep_first_line_numbers() -> None:
    lines = [b"phone,note\n", b"\n", b'1,"a\n', b"\n", b'b"\n', b"2,c\n"]
    assert _records(lines) == [(1, "phone,note"), (3, '1,"a\n\nb"'), (6, "2,c")]


def test_a_bom_says_utf8_and_is_not_part_of_the_header() -> None:
    assert _records([csvtext.BOM + b"phone,x\n", "1,女\n".encode()]) == [
        (1, "phone,x"),
        (2, "1,女"),
    ]


def test_a_record_with_a_bad_line_is_one_error_at_its_start() -> None:
    lines = [b'1,"a\n', b"\xff\xfe\n", b'2,b"\n', b"3,c\n"]
    assert _records(lines, "utf-8") == [
        (1, "error: line 2 is neither UTF-8 nor GBK text"),
        (4, "3,c"),
    ]


def test_an_unclosed_quote_at_the_end_is_one_error() -> None:
    assert _records([b"phone\n", b'1,"open\n', b"more\n"]) == [
        (1, "phone"),
        (2, "error: a quoted cell is never closed"),
    ]
