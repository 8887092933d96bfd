"""``GET /v1/logs`` answers CSV when ``Accept`` prefers it, weighing q-values."""

from __future__ import annotations

import pytest

from gateway.api.logs import wants_csv


@pytest.mark.parametrize(
    ("accept", "csv"),
    [
        ("text/csv", True),
        ("text/csv, */*", True),
        ("text/csv;q=0.5, */*;q=0.1", True),
        ("application/json, text/csv;q=0.9", False),
        ("text/csv;q=0.1, application/json", False),
        ("text/csv;q=0", False),
        ("application/json", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_csv_only_when_preferred(accept: str, csv: bool) -> None:
    assert wants_csv(accept) is csv
