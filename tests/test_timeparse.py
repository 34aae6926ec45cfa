"""Times as users type them: durations (7d, 36h), moments (2026-11-25T14:30), a time alone
(14:30, today), and the errors that say which forms there are."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator

import pytest

from dicomfs.cli import timeparse

DAY = 86400.0
Parse = Callable[[str, float], float]


@pytest.fixture(autouse=True)
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A lab 13 hours ahead of UTC, so that its day and UTC's differ in the morning."""
    monkeypatch.setenv("TZ", "LAB-13")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def local(*fields: int) -> float:
    return datetime.datetime(*fields).timestamp()


@pytest.fixture
def now() -> float:
    """08:15 local time: 19:15 the day before in UTC."""
    return local(2026, 11, 25, 8, 15)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 7 * DAY), ("36h", 36 * 3600), ("90m", 5400), ("30s", 30), ("1.5h", 5400),
     ("0.5d", DAY / 2), (" 7 d ", 7 * DAY), ("0s", 0)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert timeparse.duration(text) == seconds


@pytest.mark.parametrize("text", ["7", "d", "7w", "7D", "-1d", "7d2h", "1e3s", "", "seven days"])
def test_what_is_not_a_duration_says_which_forms_are(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a duration such as 7d, 36h, 90m or 30s"):
        timeparse.duration(text)


def test_a_duration_is_that_long_ago_or_ahead(now: float) -> None:
    assert timeparse.moment("7d", now) == now - 7 * DAY
    assert timeparse.moment_ahead("36h", now) == now + 36 * 3600
    assert timeparse.future_moment("90m", now) == now + 5400


@pytest.mark.parametrize("parse", [timeparse.moment, timeparse.moment_ahead])
def test_dates_and_times_are_local_unless_they_say_otherwise(parse: Parse, now: float) -> None:
    assert parse("2026-11-25", now) == local(2026, 11, 25)  # a date alone: its start
    assert parse("2026-11-25T14:30", now) == local(2026, 11, 25, 14, 30)
    assert parse("2026-11-25 14:30:05", now) == local(2026, 11, 25, 14, 30, 5)
    assert (
        parse("2026-11-25T14:30+00:00", now)
        == datetime.datetime(2026, 11, 25, 14, 30, tzinfo=datetime.UTC).timestamp()
    )  # an offset is kept
    assert parse(" 2026-11-25T14:30 ", now) == local(2026, 11, 25, 14, 30)


@pytest.mark.parametrize("parse", [timeparse.moment, timeparse.moment_ahead])
def test_a_time_alone_is_today_even_when_it_is_later_than_now(parse: Parse, now: float) -> None:
    assert parse("08:00", now) == local(2026, 11, 25, 8)
    assert parse("8:00", now) == local(2026, 11, 25, 8)
    assert parse("23:59:59", now) == local(2026, 11, 25, 23, 59, 59)
    assert parse("00:00", now) == local(2026, 11, 25)


def test_until_a_date_alone_is_until_that_day_is_over(now: float) -> None:
    assert (
        timeparse.future_moment("2026-11-26", now)
        == datetime.datetime(2026, 11, 26, 23, 59, 59, 999999).timestamp()
    )
    # Today is not over yet: keeping until today is keeping until midnight.
    assert timeparse.future_moment("2026-11-25", now) > now


@pytest.mark.parametrize(
    ("text", "says"),
    [("2026-11-25T08:00", "is in the past"), ("08:00", "is in the past"),
     ("2026-11-24", "is in the past"), ("0d", "is no time at all")],
)  # fmt: skip
def test_until_must_be_later_than_now(text: str, says: str, now: float) -> None:
    with pytest.raises(ValueError, match=says):
        timeparse.future_moment(text, now)


@pytest.mark.parametrize(
    "text", ["yesterday", "25:00", "14:60", "14", "2026-13-01", "2026-02-30", "25.11.2026", ""]
)
def test_what_is_no_time_says_which_forms_there_are(text: str, now: float) -> None:
    for parse, or_else in (
        (timeparse.moment, "a duration ago"),
        (timeparse.moment_ahead, "a duration from now"),
        (timeparse.future_moment, "a duration from now"),
    ):
        with pytest.raises(ValueError, match="is neither a date or time") as caught:
            parse(text, now)
        message = str(caught.value)
        assert message.startswith(f"{text.strip()!r} is neither a date or time"), message
        assert "2026-11-25T14:30" in message
        assert "14:30 for today" in message
        assert or_else in message


def test_without_now_it_is_the_present() -> None:
    before = datetime.datetime.now().timestamp()
    assert before - DAY - 1 <= timeparse.moment("1d") <= before - DAY + 60
    assert timeparse.future_moment("1h") > before
