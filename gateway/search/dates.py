"""FHIR date/dateTime/instant text → the [low, high] range it denotes, in epoch microseconds.

A value covers its whole precision: ``2024`` is all of 2024, ``2024-03-05T10:00`` the whole
minute. Values without a zone (dates) are read as UTC.
"""
from __future__ import annotations

import calendar
import re
import time
from datetime import datetime, timedelta, timezone

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
MIN_US = -(2**62)
MAX_US = 2**62
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _us(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def date_range(text: str) -> tuple[int, int]:
    """Raise ValueError if ``text`` is not a FHIR date, dateTime or instant."""
    m = _DATE_RE.match(text.strip())
    if not m:
        raise ValueError(f"'{text}' is not a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][Z|+hh:mm])")
    try:
        return _range(m.groupdict())
    except (OverflowError, ValueError) as exc:  # month 13, 30 February, hour 25 …
        raise ValueError(f"'{text}' is not a valid date: {exc}") from None


_DAY_US = 86_400_000_000


def _range(g: dict) -> tuple[int, int]:
    """Start of the value, plus the length of its precision, in integers (no datetime overflow
    at 9999-12-31: the end of the range is never built as a datetime)."""
    tz = timezone.utc
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(g["tz"][1:3]), minutes=int(g["tz"][4:6])))
    year = int(g["y"])
    if g["m"] is None:
        start, length = datetime(year, 1, 1, tzinfo=tz), (366 if calendar.isleap(year) else 365) * _DAY_US
    elif g["d"] is None:
        month = int(g["m"])
        start, length = datetime(year, month, 1, tzinfo=tz), calendar.monthrange(year, month)[1] * _DAY_US
    elif g["H"] is None:
        start, length = datetime(year, int(g["m"]), int(g["d"]), tzinfo=tz), _DAY_US
    else:
        frac = g["f"] or ""
        micro = int((frac + "000000")[:6]) if frac else 0
        second = int(g["S"]) if g["S"] is not None else 0
        start = datetime(year, int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), second, micro, tzinfo=tz)
        if g["S"] is None:
            length = 60_000_000
        elif not frac:
            length = 1_000_000
        else:
            length = 10 ** (6 - min(len(frac), 6))
    low = _us(start)
    return low, low + length - 1


def now_us() -> int:
    return time.time_ns() // 1000  # µs since the epoch (UTC), as _us gives; called on every request


def parse_instant(text: str) -> int:
    """Start of the instant's range, for parameters such as ``_since``."""
    return date_range(text)[0]
