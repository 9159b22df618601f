"""LUSEN's deadlines and payment rule, as the agreements in profiles/agreements/ set them: the
law's defaults, Stockholm 2020 (day 0, 12:00, psychiatry 5 days, the average model) and a
working-days variant — weekends, Swedish holidays, daylight-saving nights."""
from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest

from gateway.settings import REPO_PROFILES
from gateway.workflow.agreements import AgreementError, Agreements
from gateway.workflow.calendar import STOCKHOLM, Calendar
from gateway.workflow.payment import StayFacts, average, per_stay

AGREEMENTS = Agreements.load(REPO_PROFILES / "agreements")
DEFAULT = AGREEMENTS.by_id("lusen-national-default")
STOCKHOLM_2020 = AGREEMENTS.by_id("stockholm-2020")
WORKING = AGREEMENTS.by_id("working-days-noon")
NOW = datetime(2030, 1, 1, tzinfo=STOCKHOLM)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=STOCKHOLM)


def due(agreement, name: str, start: str) -> datetime:
    rule = agreement.data["deadlines"][name]
    return Calendar(agreement.data["calendar"]["nonWorkingDays"]).due(at(start), rule["amount"], rule["unit"])


def stay(notice: str | None, discharged: str | None, admitted: str = "2022-05-01T08:00", in_time: bool = True,
         services: tuple[str, ...] = ()) -> StayFacts:
    return StayFacts(at(admitted), at(discharged) if discharged else None, in_time, at(notice) if notice else None,
                     services)


# -- which agreement -------------------------------------------------------------------------------
def test_the_most_specific_valid_agreement_governs():
    assert AGREEMENTS.governing("2321000016", "0180", date(2024, 5, 1)).id == "stockholm-2020"
    assert AGREEMENTS.governing("2321000016", "1380", date(2024, 5, 1)).id == "lusen-national-default"
    assert AGREEMENTS.governing("2321000115", "9999", date(2024, 5, 1)).id == "working-days-noon"
    assert AGREEMENTS.governing("2321000016", "0180", date(2019, 6, 1)).id == "lusen-national-default"  # before 2020


def test_a_bad_agreement_stops_loading_naming_the_file(tmp_path: Path):
    for name in ("agreement.schema.json", "lusen-national-default.json"):
        (tmp_path / name).write_text((REPO_PROFILES / "agreements" / name).read_text("utf-8"), "utf-8")
    (tmp_path / "broken.json").write_text('{"id": "broken", "version": "1"}', "utf-8")
    with pytest.raises(AgreementError, match="broken.json"):
        Agreements.load(tmp_path)


# -- deadlines -------------------------------------------------------------------------------------
def test_admission_notice_due_24_hours_after_admission_across_the_spring_forward_night():
    # 2026-03-29 02:00 → 03:00: 24 hours after Saturday 12:00 is Sunday 13:00 local time.
    assert due(DEFAULT, "admissionNotice", "2026-03-28T12:00") == at("2026-03-29T13:00")


def test_sip_invitation_due_three_calendar_days_after_utskrivningsklar():
    assert due(DEFAULT, "sipInvitation", "2026-06-18T10:00") == at("2026-06-22T00:00")  # the end of Sunday 21st


def test_sip_invitation_in_working_days_skips_midsommar_and_the_weekend():
    # Thursday 18 June 2026; midsommarafton (19th) and the weekend are not working days.
    assert due(WORKING, "sipInvitation", "2026-06-18T10:00") == at("2026-06-25T00:00")


def test_sip_invitation_in_working_days_skips_christmas():
    assert due(WORKING, "sipInvitation", "2026-12-23T09:00") == at("2026-12-31T00:00")  # 28, 29, 30 December


def test_a_day_deadline_over_the_autumn_night_is_still_a_day():
    assert due(DEFAULT, "sipInvitation", "2026-10-23T10:00") == at("2026-10-27T00:00")


# -- payment days ----------------------------------------------------------------------------------
def test_payment_starts_three_calendar_days_after_the_notice_by_default():
    result = per_stay(DEFAULT, stay("2022-05-09T10:00", "2022-05-16T11:00"), NOW)  # notice Monday
    assert result.preconditions and result.days == 3  # Friday, Saturday, Sunday; not the day of discharge
    assert result.amount == 3 * 9300


def test_no_payment_without_both_notices():
    late = per_stay(DEFAULT, stay("2022-05-09T10:00", "2022-05-20T11:00", in_time=False), NOW)
    assert not late.preconditions and late.days == 0 and "not given in time" in late.steps[-1]
    none = per_stay(DEFAULT, stay(None, "2022-05-20T11:00"), NOW)
    assert not none.preconditions and none.days == 0


def test_stockholm_counts_day_zero_two_free_days_for_somatic_care():
    result = per_stay(STOCKHOLM_2020, stay("2022-05-09T10:00", "2022-05-16T11:00"), NOW)
    assert result.free_days == 2 and result.days == 5  # from Wednesday: 11, 12, 13, 14, 15


def test_stockholm_a_notice_after_noon_counts_from_the_next_day():
    result = per_stay(STOCKHOLM_2020, stay("2022-05-09T12:30", "2022-05-16T11:00"), NOW)
    assert result.days == 4 and any("after 12:00" in s for s in result.steps)


def test_stockholm_psychiatric_care_has_five_free_days():
    result = per_stay(STOCKHOLM_2020, stay("2022-05-09T10:00", "2022-05-16T11:00", services=("PSY",)), NOW)
    assert result.free_days == 5 and result.days == 2 and result.care_type == "psykiatrisk vård"


def test_working_day_free_days_skip_midsommar():
    # Notice Tuesday 20 June 2023 at 10:00; free: 21, 22, 26 June (23rd is midsommarafton, then the weekend).
    agreement = WORKING
    result = per_stay(agreement, stay("2023-06-20T10:00", "2023-06-29T09:00"), NOW)
    assert result.days == 2  # 27 and 28 June
    assert result.amount is None and "2023" in result.steps[-1]  # no 2023 figure in that agreement


def test_the_amount_is_the_figure_of_each_days_year():
    result = per_stay(DEFAULT, stay("2019-12-27T09:00", "2020-01-03T09:00", admitted="2019-12-20T08:00"), NOW)
    assert result.days == 3 and result.amount is None  # 31 Dec 2019 is known, 2020 is not in the table
    result = per_stay(DEFAULT, stay("2019-12-20T09:00", "2019-12-28T09:00", admitted="2019-12-10T08:00"), NOW)
    assert result.days == 4 and result.amount == 4 * 7800


def test_stockholm_average_model_pays_only_the_days_above_the_level():
    period = (date(2022, 5, 1), date(2022, 5, 31))
    stays = [stay("2022-05-09T10:00", "2022-05-09T15:00"),  # day 0
             stay("2022-05-09T10:00", "2022-05-10T15:00"),  # 1 day
             stay("2022-05-09T10:00", "2022-05-17T15:00")]  # 8 days
    result = average(STOCKHOLM_2020, stays, period, NOW)
    assert result.days == 3 and result.amount == 3 * 9300  # mean 3 > 2: 9 − 2 × 3 days
    under = average(STOCKHOLM_2020, stays[:2], period, NOW)
    assert under.days == 0  # mean 0.5 under the level: nothing
