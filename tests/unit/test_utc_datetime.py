"""Times on SQLite: written as the text SQLAlchemy's own SQLite type writes, read back in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from pizzeria.kit.clock import as_utc
from pizzeria.kit.db import UTCDateTime

TIMES = [
    datetime(2026, 11, 29, 10, 0, tzinfo=UTC),
    datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    datetime(2026, 5, 5, 1, 2, 3, 999999, tzinfo=timezone(timedelta(hours=3))),
    datetime(1, 1, 1, 0, 0),  # naive: taken as UTC
]


@pytest.mark.parametrize("when", TIMES)
def test_the_text_is_sqlalchemys_sqlite_datetime_in_utc(when: datetime) -> None:
    dialect = sqlite.dialect()
    ours = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    theirs = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert ours is not None
    assert theirs is not None
    in_utc = when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
    assert ours(when) == theirs(in_utc)
    assert ours(None) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-29 10:00:00.000001", datetime(2026, 11, 29, 10, 0, 0, 1, tzinfo=UTC)),
        ("2026-11-29 10:00:00", datetime(2026, 11, 29, 10, 0, tzinfo=UTC)),  # CURRENT_TIMESTAMP's text
        ("2026-11-29T12:00:00+02:00", datetime(2026, 11, 29, 10, 0, tzinfo=UTC)),
    ],
)
def test_text_reads_back_as_an_aware_utc_time(text: str, expected: datetime) -> None:
    dialect = sqlite.dialect()
    read = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
    assert read is not None
    value = read(text)
    assert value == expected
    assert value.tzinfo is UTC
    assert read(None) is None


def test_a_time_goes_in_and_comes_out_of_a_sqlite_table_ordered(tmp_path: Path) -> None:
    table = sa.Table("t", sa.MetaData(), sa.Column("at", UTCDateTime, primary_key=True))
    engine = sa.create_engine(f"sqlite:///{tmp_path / 't.db'}")
    with engine.begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), [{"at": t} for t in TIMES])
        back = conn.execute(sa.select(table.c.at).order_by(table.c.at)).scalars().all()
        later = conn.execute(sa.select(table.c.at).where(table.c.at > TIMES[1])).scalars().all()
    assert back == sorted(as_utc(t) for t in TIMES)
    assert all(t.tzinfo is UTC for t in back)
    assert later == [TIMES[2], TIMES[0]]
    engine.dispose()


def test_a_columns_times_in_turn_each_get_their_own_text() -> None:
    """A column's bind processor remembers the last time it made text (rows of a statement
    often share one): the same object again, another equal or not, None, all in turn."""
    dialect = sqlite.dialect()
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    other_column = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    assert other_column is not None
    theirs = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert theirs is not None
    first, second = TIMES[1], TIMES[2]
    equal = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    sequence = [first, first, second, None, second, first, equal, TIMES[3], TIMES[3], None, None, TIMES[0]]
    for when in sequence:
        expected = None if when is None else theirs(when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when)
        assert process(when) == expected
        assert other_column(second) == theirs(second.astimezone(UTC).replace(tzinfo=None))
