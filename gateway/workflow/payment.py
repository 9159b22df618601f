"""Payment responsibility for utskrivningsklara patients (LUSEN 5 kap.), computed from a stay's facts.

The municipality pays the region per vårddygn a patient stays after the free days that follow
the utskrivningsklar notice, if the region gave both notices (the inskrivningsmeddelande in time,
and the utskrivningsklar notice). How the free days are counted is the agreement's:

- the notice's day is day 0; with ``dayZeroCounts`` it is the first free day;
- a notice after ``noticeCutoff`` (local time) counts as given the next day (next working day
  when days are working days);
- ``days``: free days are calendar or working days; once responsibility has begun, every night
  the patient stays counts (the day of discharge does not);
- the care type (somatic, psychiatric …) by the stay's ``serviceType`` picks the free days;
- the amount per day is the agreement's for the date of each day (Socialstyrelsen's figure unless
  the parties agreed another); a day without a known amount makes the amount unknown, not zero.

Per stay (``per_stay``) for the ``per-stay`` model; ``average`` for Stockholm 2020's model: the
municipality pays when the mean number of days after the notice over all its discharged patients
in a period (day-0 discharges included) exceeds the free days — for the days above that level.
Every result lists its steps, so a coordinator can see why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from gateway.workflow.agreements import Agreement
from gateway.workflow.calendar import Calendar, after_cutoff, local_day


@dataclass(frozen=True)
class StayFacts:
    """What the payment rule needs to know about one stay (gateway/workflow/facts.py reads it)."""

    admitted: datetime
    discharged: datetime | None  # None: still in hospital (days so far, up to ``now``)
    notice_in_time: bool  # the inskrivningsmeddelande reached the municipality within the deadline
    utskrivningsklar: datetime | None  # the notice in force (not revoked) at discharge, or now
    service_types: tuple[str, ...] = ()


@dataclass
class PaymentResult:
    days: int = 0
    amount: int | None = 0  # SEK; None: a day's amount is not known
    free_days: int = 0
    care_type: str = ""
    days_after_notice: int = 0  # from the effective notice day to discharge (the average model's measure)
    preconditions: bool = True
    steps: list[str] = field(default_factory=list)


def care_type(agreement: Agreement, service_types: tuple[str, ...]) -> dict:
    types = agreement.data["payment"]["careTypes"]
    for kind in types:
        if set(kind.get("serviceTypes") or ()) & set(service_types):
            return kind
    return next((k for k in types if not k.get("serviceTypes")), types[0])


def per_stay(agreement: Agreement, stay: StayFacts, now: datetime) -> PaymentResult:
    rule = agreement.data["payment"]
    calendar = Calendar(agreement.data["calendar"]["nonWorkingDays"])
    kind = care_type(agreement, stay.service_types)
    out = PaymentResult(free_days=kind["freeDays"], care_type=kind["name"])
    out.steps.append(f"agreement {agreement.label}: {rule['model']} model, {rule['days']} days, care type "
                     f"'{kind['name']}' with {kind['freeDays']} free days")
    missing = []
    if "admission-notice-in-time" in rule["requires"] and not stay.notice_in_time:
        missing.append("the inskrivningsmeddelande was not given in time")
    if "utskrivningsklar-notice" in rule["requires"] and stay.utskrivningsklar is None:
        missing.append("no utskrivningsklar notice is in force")
    if missing:
        out.preconditions = False
        out.steps.append("no payment responsibility: " + "; ".join(missing))
        return out
    notice_day = effective_notice_day(agreement, calendar, stay.utskrivningsklar, out.steps)
    end = local_day(stay.discharged or now)
    out.days_after_notice = max(0, (end - notice_day).days)
    first = first_payable_day(agreement, calendar, notice_day, kind["freeDays"])
    out.steps.append(f"free days counted from {notice_day} (day 0{', a free day' if rule['dayZeroCounts'] else ''}); "
                     f"responsibility from {first}")
    payable = [first + timedelta(days=i) for i in range(max(0, (end - first).days))]
    out.days = len(payable)
    out.steps.append(f"{'discharged' if stay.discharged else 'still in hospital on'} {end}: {out.days} day(s) "
                     "to pay (the day of discharge does not count)")
    out.amount = amount_for(agreement, payable, out.steps)
    return out


def effective_notice_day(agreement: Agreement, calendar: Calendar, notice: datetime, steps: list[str]) -> date:
    rule = agreement.data["payment"]
    day = local_day(notice)
    if after_cutoff(notice, rule.get("noticeCutoff")):
        day += timedelta(days=1)
        if rule["days"] == "working":
            day = calendar.next_working(day)
        steps.append(f"the notice came after {rule['noticeCutoff']}: it counts as given on {day}")
    return day


def first_payable_day(agreement: Agreement, calendar: Calendar, notice_day: date, free: int) -> date:
    rule = agreement.data["payment"]
    if rule["days"] == "calendar":
        return notice_day + timedelta(days=free if rule["dayZeroCounts"] else free + 1)
    if rule["dayZeroCounts"] and calendar.is_working(notice_day):
        last_free = calendar.add_working_days(notice_day, free - 1) if free else notice_day - timedelta(days=1)
    else:
        last_free = calendar.add_working_days(notice_day, free)
    return last_free + timedelta(days=1)


def amount_for(agreement: Agreement, days: list[date], steps: list[str]) -> int | None:
    """The sum of each day's amount; None (with a step saying which years) if a day has none."""
    table = agreement.data["payment"]["amounts"]
    total, unknown, used = 0, set(), set()
    for day in days:
        text = day.isoformat()
        rate = next((a for a in table if a["from"] <= text and (not a.get("to") or text <= a["to"])), None)
        if rate is None:
            unknown.add(day.year)
            continue
        total += rate["perDay"]
        used.add(f"{rate['perDay']} SEK/day ({rate['source']})")
    if unknown:
        steps.append(f"no amount per day for {', '.join(map(str, sorted(unknown)))} in the agreement: the amount is "
                     "unknown (add Socialstyrelsen's figure for that year, with its source)")
        return None
    if days:
        steps.append(f"amount: {total} SEK at " + "; ".join(sorted(used)))
    return total


def average(agreement: Agreement, stays: list[StayFacts], period: tuple[date, date], now: datetime) -> PaymentResult:
    """The average model over the stays discharged in ``period`` (both notices given), per care type."""
    out = PaymentResult()
    out.steps.append(f"agreement {agreement.label}: average model over stays discharged {period[0]}..{period[1]}")
    by_type: dict[str, list[PaymentResult]] = {}
    for stay in stays:
        result = per_stay(agreement, stay, now)
        if result.preconditions:
            by_type.setdefault(result.care_type, []).append(result)
    total_days, amount = 0, 0
    for name, results in sorted(by_type.items()):
        free = results[0].free_days
        days = [r.days_after_notice for r in results]
        mean = sum(days) / len(days)
        excess = max(0, sum(days) - free * len(days)) if mean > free else 0
        out.steps.append(f"{name}: {len(days)} stay(s), mean {mean:.2f} day(s) after the notice against {free} free "
                         f"day(s): {excess} day(s) to pay")
        total_days += excess
    out.days = total_days
    last_day = [period[1]] * total_days
    out.amount = amount_for(agreement, last_day, out.steps) if total_days else amount
    return out
