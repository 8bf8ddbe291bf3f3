"""Value semantics shared by the indexer and the search compiler: dates as ranges of UTC
microseconds, numbers with their implicit precision, normalised strings."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_US = -62135596800000000  # 0001-01-01
MAX_US = 253402300799999999  # 9999-12-31T23:59:59.999999

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def to_us(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def now_us() -> int:
    return to_us(datetime.now(UTC))


def instant_text(us: int) -> str:
    """FHIR instant with millisecond precision, as servers usually write meta.lastUpdated."""
    dt = from_us(us)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def http_date(us: int) -> str:
    return from_us(us).strftime("%a, %d %b %Y %H:%M:%S GMT")


def date_range(text: str) -> tuple[int, int] | None:
    """The instants a FHIR date/dateTime/instant covers: [low, high], inclusive, in UTC µs.

    A partial date covers its whole year/month/day; a time without a zone is read as UTC.
    """
    m = _DATE.match(text.strip())
    if not m:
        return None
    try:
        year = int(m["y"])
        if m["m"] is None:
            start = datetime(year, 1, 1, tzinfo=UTC)
            end = datetime(year + 1, 1, 1, tzinfo=UTC) if year < 9999 else None
        elif m["d"] is None:
            month = int(m["m"])
            start = datetime(year, month, 1, tzinfo=UTC)
            end = (datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
                   if not (year == 9999 and month == 12) else None)
        elif m["H"] is None:
            start = datetime(year, int(m["m"]), int(m["d"]), tzinfo=UTC)
            last_day = start.year == 9999 and start.month == 12 and start.day == 31
            end = None if last_day else start + timedelta(days=1)
        else:
            frac = (m["f"] or "")[:6]
            micro = int(frac.ljust(6, "0")) if frac else 0
            start = datetime(year, int(m["m"]), int(m["d"]), int(m["H"]), int(m["M"]),
                             int(m["S"] or 0), micro, tzinfo=UTC)
            tz = m["tz"]
            if tz and tz != "Z":
                sign = 1 if tz[0] == "+" else -1
                start -= sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
            if m["S"] is None:
                unit = timedelta(minutes=1)
            elif m["f"] is None:
                unit = timedelta(seconds=1)
            else:
                unit = timedelta(microseconds=10 ** (6 - min(len(m["f"]), 6)))
            end = start + unit
    except (ValueError, OverflowError):
        return None
    low = to_us(start)
    high = to_us(end) - 1 if end is not None else MAX_US
    return low, high


def normalise(text: str) -> str:
    """Case- and accent-insensitive form used by string search."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()[:255]


def number_range(value: object) -> tuple[float, float, float] | None:
    """A number with its implicit precision: 100 covers [99.5, 100.5), 1.50 covers [1.495, 1.505)."""
    if isinstance(value, bool):
        return None
    try:
        dec = Decimal(getattr(value, "text", None) or str(value))
    except (InvalidOperation, ValueError):
        return None
    if not dec.is_finite():
        return None
    exponent = dec.as_tuple().exponent
    assert isinstance(exponent, int)
    try:  # an exponent beyond the decimal context's range (1e1000001) overflows: not a number we take
        half = Decimal(5).scaleb(exponent - 1)
        return float(dec), float(dec - half), float(dec + half)
    except ArithmeticError:
        return None
