"""Time helpers for normalisation (CONTRACT sections 3 and 6).

Devices send times in every shape the app ever produced: ISO-8601 with `Z`, ISO-8601 with an offset,
epoch-ms numbers, numeric strings (epoch ms) and the legacy `YYYY-MM-DD HH:MM:SS` (UTC). Everything here
works on epoch milliseconds, the unit of JavaScript's `Date`, and reproduces what the app's JavaScript
does with them (`Date.parse`, `toISOString`, `Math.round`).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

MS_PER_DAY = 86_400_000

# ECMAScript time values are limited to 100 million days either side of 1970; beyond that a Date is
# invalid, so such values are as unparseable as garbage.
MAX_TIME_MS = 100_000_000 * MS_PER_DAY

# The contract's "ISO-Z string": `YYYY-MM-DDTHH:MM`, optional `:SS` and fraction, upper-case `Z`.
_ISO_Z = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?Z")

# Every date-time form accepted on the way in. A missing zone means UTC: legacy `YYYY-MM-DD HH:MM:SS`
# rows were written by SQLite's CURRENT_TIMESTAMP, and the app's server runs in UTC.
_DATE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"  # date
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?"  # time: hour, minute, second, fraction
    r"(?:[Zz]|([+-])([0-9]{2})(?::?([0-9]{2}))?)?)?"  # zone: sign, hours, minutes
)

# Numeric strings are epoch ms (old clients stringified `Date.now()`). Longer digit runs cannot be a valid
# time anyway, and the bound keeps `int()` away from Python's limit on huge digit strings.
_NUMERIC = re.compile(r"-?[0-9]{1,20}(?:\.[0-9]{1,20})?")

_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def is_iso_z(value: object) -> bool:
    """True for the contract's ISO-Z strings (the form the app stores as-is)."""
    return isinstance(value, str) and _ISO_Z.fullmatch(value) is not None


def to_epoch_ms(value: object) -> int | None:
    """Epoch milliseconds of any time form a device may send, or None when it is not a valid time."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -MAX_TIME_MS <= value <= MAX_TIME_MS else None
    if isinstance(value, float):
        return _float_ms(value)
    if type(value) is str:
        # Devices repeat times (createdAt and updatedAt are often one instant; re-uploads send the same
        # history again): parsing one is many times what looking it up costs.
        ms = _string_ms.get(value, _UNPARSED)
        if ms is _UNPARSED:
            ms = _string_to_epoch_ms(value)
            if len(value) <= _MAX_CACHED_TIME_CHARS:
                if len(_string_ms) >= _MAX_CACHED_TIMES:
                    _string_ms.clear()
                _string_ms[value] = ms
        return ms
    if isinstance(value, str):
        return _string_to_epoch_ms(value)
    return None


_UNPARSED: int | None = -(2**80)  # never a time: a cache miss
_string_ms: dict[str, int | None] = {}
_MAX_CACHED_TIMES = 16_384
_MAX_CACHED_TIME_CHARS = 64


def _string_to_epoch_ms(value: str) -> int | None:
    match = _DATE_TIME.fullmatch(value)
    if match is not None:
        return _date_time_ms(match)
    if _NUMERIC.fullmatch(value):
        return _float_ms(float(value)) if "." in value else to_epoch_ms(int(value))
    return None


def ms_to_iso_z(ms: int) -> str:
    """`Date.prototype.toISOString`: `2025-07-01T18:30:12.345Z`, always with milliseconds.

    Years outside 0..9999 use JavaScript's expanded form (`+012345-...`, `-000001-...`).
    """
    days, ms_of_day = divmod(ms, MS_PER_DAY)
    year, month, day = _civil_from_days(days)
    seconds_of_day, millis = divmod(ms_of_day, 1000)
    minutes_of_day, second = divmod(seconds_of_day, 60)
    hour, minute = divmod(minutes_of_day, 60)
    year_text = f"{year:04d}" if 0 <= year <= 9999 else f"{'-' if year < 0 else '+'}{abs(year):06d}"
    return f"{year_text}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}Z"


def js_round(x: float) -> int:
    """JavaScript `Math.round`: the nearest integer, halves toward +infinity (`Math.round(-2.5) == -2`).

    The contract words this as "half away from zero"; the two agree on every non-negative number, and a
    negative duration is quarantined before it is rounded, so the app's actual behaviour is what we copy.
    Unlike `math.floor(x + 0.5)` this is exact for 0.49999999999999994 and for odd integers above 2**52.
    Raises ValueError for NaN and OverflowError for infinities, as `int()` does.
    """
    if isinstance(x, int):
        return x
    floor = math.floor(x)
    return floor + 1 if x - floor >= 0.5 else floor


def _float_ms(value: float) -> int | None:
    # `new Date(1.5)` truncates toward zero (TimeClip), and is invalid when not finite or out of range.
    if not math.isfinite(value) or abs(value) > MAX_TIME_MS:
        return None
    return int(value)


def _date_time_ms(match: re.Match[str]) -> int | None:
    """Epoch ms of the parts `_DATE_TIME` matched, or None when they name no real time."""
    parts = match.groups()
    year, month, day, hour, minute, second = [int(part or 0) for part in parts[:6]]
    fraction, sign, zone_hour, zone_minute = parts[6:]
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)):
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    if sign:
        offset_hour, offset_minute = int(zone_hour or 0), int(zone_minute or 0)
        if offset_hour > 23 or offset_minute > 59:
            return None
        offset = offset_hour * 60 + offset_minute
        minute -= offset if sign == "+" else -offset
    # Date.parse keeps milliseconds and drops any finer digits.
    millis = int(fraction[:3].ljust(3, "0")) if fraction else 0
    seconds = _days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
    return seconds * 1000 + millis


def _days_in_month(year: int, month: int) -> int:
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return _DAYS_IN_MONTH[month - 1]


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """Inverse of `_days_from_civil`: (year, month, day) of a day number."""
    days += 719_468
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + 3 if month_index < 10 else month_index - 9
    return year_of_era + era * 400 + (month <= 2), month, day


# ---- the app's TIMESTAMP text (added for the storage engines; the forms above are the devices') ------

APP_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"  # SQLite's CURRENT_TIMESTAMP form, UTC: the service's own times


def app_timestamp(moment: datetime | None = None) -> str:
    """`moment` (now by default) in the app's TIMESTAMP form, `YYYY-MM-DD HH:MM:SS` in UTC."""
    return (moment if moment is not None else datetime.now(UTC)).astimezone(UTC).strftime(APP_TIMESTAMP_FORMAT)


APP_HOUR_FORMAT = "%Y-%m-%d %H"  # an hour of the ledger's `created_at`: how per-hour activity is named


def app_hour(moment: datetime) -> str:
    """The hour `moment` (a UTC time) falls in, as the ledger's per-hour activity names it: `YYYY-MM-DD HH`."""
    return moment.strftime(APP_HOUR_FORMAT)
