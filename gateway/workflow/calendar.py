"""Deadlines and day counts as the agreements define them, in Europe/Stockholm time.

- **Hours** are elapsed time: 24 hours after 12:00 the day before the spring-forward night is
  13:00 local time (the night had 23 hours).
- **Days** end at local midnight: "within 3 days" of something on Monday at 10:00 is due by the
  end of Thursday (Monday is day 0). A daylight-saving night changes nothing (it is still a day).
- **Working days** skip what the agreement's calendar calls non-working: Saturdays, Sundays and
  the Swedish holiday categories of the ``holidays`` package (``public``: the helgdagar;
  ``de_facto``: midsommarafton, julafton, nyårsafton).
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

STOCKHOLM = ZoneInfo("Europe/Stockholm")
WEEKDAYS = {"saturday": 5, "sunday": 6}


@lru_cache(maxsize=64)
def _holidays(year: int, categories: tuple[str, ...]) -> frozenset[date]:
    if not categories:
        return frozenset()
    return frozenset(holidays.Sweden(years=[year], categories=categories).keys())


class Calendar:
    def __init__(self, non_working: list[str] | tuple[str, ...]):
        self.weekend = frozenset(WEEKDAYS[d] for d in non_working if d in WEEKDAYS)
        self.categories = tuple(sorted(d for d in non_working if d not in WEEKDAYS))

    def is_working(self, day: date) -> bool:
        return day.weekday() not in self.weekend and day not in _holidays(day.year, self.categories)

    def next_working(self, day: date) -> date:
        """``day`` if it is a working day, else the next one."""
        while not self.is_working(day):
            day += timedelta(days=1)
        return day

    def add_working_days(self, day: date, count: int) -> date:
        """The ``count``-th working day after ``day`` (``day`` itself is day 0)."""
        while count > 0:
            day += timedelta(days=1)
            if self.is_working(day):
                count -= 1
        return day

    def due(self, start: datetime, amount: int, unit: str) -> datetime:
        """When a period of ``amount`` ``unit`` (hours, days, working-days) that starts at ``start`` ends."""
        if unit == "hours":  # elapsed time: in UTC (aware arithmetic in a zone would add wall-clock hours)
            aware = start if start.tzinfo else start.replace(tzinfo=STOCKHOLM)
            return (aware.astimezone(timezone.utc) + timedelta(hours=amount)).astimezone(STOCKHOLM)
        local = local_day(start)
        last = local + timedelta(days=amount) if unit == "days" else self.add_working_days(local, amount)
        return end_of_day(last)


def local_day(moment: datetime) -> date:
    """The Stockholm calendar day of a moment (a naive one is taken as Stockholm time)."""
    return (moment.astimezone(STOCKHOLM) if moment.tzinfo else moment).date()


def end_of_day(day: date) -> datetime:
    """The first instant of the next local day: the end of ``day`` in Stockholm, DST included."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=STOCKHOLM)


def after_cutoff(moment: datetime, cutoff: str | None) -> bool:
    """Whether ``moment`` is later in its local day than ``cutoff`` ("HH:MM")."""
    if not cutoff:
        return False
    hours, minutes = (int(p) for p in cutoff.split(":"))
    local = moment.astimezone(STOCKHOLM) if moment.tzinfo else moment
    return local.time() > time(hours, minutes)
