"""Sandbox time: UTC inside, the company's offset (-07:00, as Intuit's sandboxes) outside."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

COMPANY_TZ = timezone(timedelta(hours=-7))


def utc_now() -> datetime:
    """Return the current time, timezone-aware UTC."""
    return datetime.now(UTC)


def local_time(when: datetime | None = None, ms: bool = False) -> str:
    """Format a time in the company's offset, as MetaData and `time` carry it."""
    local = (when or utc_now()).astimezone(COMPANY_TZ)
    return local.isoformat(timespec="milliseconds" if ms else "seconds")


def local_date(when: datetime | None = None) -> date:
    """The company's calendar date."""
    return (when or utc_now()).astimezone(COMPANY_TZ).date()


def parse_time(text: str) -> datetime:
    """Parse an ISO date or date-time (a date means its start, company time)."""
    if len(text) == 10:
        day = date.fromisoformat(text)
        return datetime(day.year, day.month, day.day, tzinfo=COMPANY_TZ)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=COMPANY_TZ)
