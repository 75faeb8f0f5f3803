"""§2 Latest ship time (最晚发货时间): the first rule that applies."""

from __future__ import annotations

from .clock import DAY_US, US, day_of_date, day_start_us
from .rules import PlatformRules


def latest_ship_time_us(paid: dict, rules: PlatformRules) -> int:
    """``paid`` is a validated ``order.paid`` event."""
    promised = paid.get("promised_ship_by_us")
    if promised is not None:
        return promised
    presale = paid.get("presale")
    if presale:
        ship_by = presale.get("ship_by")
        if ship_by is not None:
            # 23:59:59 local of the ship-by date
            return day_start_us(day_of_date(ship_by)) + DAY_US - US
        return paid["ts_us"] + presale["ship_within_days"] * DAY_US
    return paid["ts_us"] + rules.ship_after_payment_us[paid.get("trade_type") or "domestic"]
