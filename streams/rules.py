"""Every threshold, window and curve of shared/spec/rules.md, as configuration.

Defaults are the spec's; a deployment overrides them with a JSON file named by
``SHOPWATCH_RULES`` (read by the shells, not here) shaped like ``DEFAULTS``:
global keys, and per-platform overrides under ``platforms.<platform>``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

DEFAULTS: dict = {
    # §2 latest ship time after payment, hours, by trade type
    "ship_after_payment_hours": {"domestic": 48, "bonded": 48, "direct_mail": 48},
    # §8 alert thresholds, hours
    "ship_warning_before_hours": 24,
    "pickup_timeout_hours": 24,
    "transit_timeout_hours": {"domestic": 48, "bonded": 96, "direct_mail": 96},
    "delivery_timeout_hours": 24,
    "refund_response_warning_hours": 36,
    "refund_response_overdue_hours": 48,
    "return_receipt_warning_hours": 6 * 24,
    "return_receipt_overdue_hours": 7 * 24,
    "cod_proof_overdue_hours": 48,
    "fresh_claim_window_hours": 24,
    "fresh_claim_full_ratio": 0.3,
    "fresh_claim_extra_share": 0.3,
    "fresh_claim_extra_min_fen": 500,
    "fresh_claim_extra_max_fen": 10_000,
    "daily_cap_warning_share": 0.8,
    # 天猫 ship_overdue compensation exposure
    "overdue_compensation_share": 0.0,
    "overdue_compensation_max_fen": 0,
    "overdue_compensation_claim_after_hours": 72,
    # §3 小红书 score
    "score_half_life_days": None,
    "platforms": {
        "xiaohongshu": {
            "ship_after_payment_hours": {"domestic": 48, "bonded": 72, "direct_mail": 120},
        },
        "tmall": {
            "overdue_compensation_share": 0.3,
            "overdue_compensation_max_fen": 50_000,
        },
    },
    # §3 default curves: value at score 3 -> value at score 5
    "xiaohongshu_curves": {
        "review_avg": [4.0, 4.9],
        "quality_refund_rate": [0.05, 0.005],
        "on_time_ship_rate": [0.90, 0.999],
        "pay_to_sign_hours": [120, 48],
        "refund_only_hours": [48, 2],
        "return_refund_hours": [168, 48],
        "reply_3min_rate": [0.60, 0.95],
        "complaint_rate": [0.01, 0.0005],
    },
    "xiaohongshu_profiles": {
        "service_score": {"product": 0.2, "logistics": 0.2, "after_sale": 0.2, "consultation": 0.2, "disputes": 0.2},
        "legacy_shop_score": {"logistics": 0.25, "consultation": 0.2, "product": 0.25, "after_sale": 0.2,
                              "disputes": 0.1},
    },
    # §6 快手 duration items: value at item score 3 -> 5 (the seeds give no curve; ours)
    "kuaishou_curves": {"refund_only_hours": [48, 2], "return_refund_hours": [168, 48]},
    "kuaishou_gate": {"max_judged": 4, "max_rate": 0.0035, "cap": 4.0},
    # §4 抖音 levels
    "douyin_start_level": 1,
    "douyin_level_wait_days": 30,
    "douyin_lv0_clear_days": 60,
    "douyin_caps": [  # (orders, GMV in yuan) per level LV0..LV7; None = no cap
        [50, 5_000], [500, 50_000], [2_000, 200_000], [6_000, 600_000], [15_000, 1_500_000],
        [30_000, 3_000_000], [50_000, 5_000_000], None,
    ],
    "douyin_cumulative_to_leave": [400, 4_000, 16_000, 48_000, 120_000, 240_000, 400_000],
    "douyin_upgrade": {"on_time_ship_rate": 0.999, "fake_ship_rate": 0.01, "im_first_response_minutes": 3.0,
                       "good_rate": 0.90, "min_reviews": 100, "review_rate": 0.05, "complaint_rate": 0.001},
    "douyin_downgrade": {"on_time_ship_rate": 0.99, "fake_ship_rate": 0.04, "im_first_response_minutes": 5.0,
                         "good_rate": 0.83, "complaint_rate": 0.002, "complaint_count": 1},
    "douyin_fast_upgrade": {"cap_share": 0.8, "review_rate": 0.10},
    # retention (issue 13): an order or chat session whose latest instant (its latest fact, deadline
    # or attribution instant) is more than its platform's retention ago is retired (streams/retention.py).
    # after_sale_days: how long after the trade an after-sale request or dispute may still come
    # (rules.md §9: 抖音 耐用品 6 months, the longest the seeds name; taken for every platform);
    # retention_days: null = the derived horizon (the longest indicator window or cohort reach and
    # after_sale_days) plus retention_margin_days
    "after_sale_days": 186,
    "retention_margin_days": 30,
    "retention_days": None,
}

WINDOW_DAYS = {"xiaohongshu": 180, "douyin": 30, "douyin_experience": 90, "kuaishou": 30, "jd": 30, "tmall": 30}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


@dataclass(frozen=True)
class PlatformRules:
    """Resolved thresholds for one platform, as plain attributes (hot path)."""

    platform: str
    ship_after_payment_us: dict
    ship_warning_before_us: int
    pickup_timeout_us: int
    transit_timeout_us: dict
    delivery_timeout_us: int
    refund_response_warning_us: int
    refund_response_overdue_us: int
    return_receipt_warning_us: int
    return_receipt_overdue_us: int
    cod_proof_overdue_us: int
    fresh_claim_window_us: int
    raw: dict


H = 3600 * 1_000_000


class Rules:
    def __init__(self, overrides: dict | None = None) -> None:
        self.raw = _merge(DEFAULTS, overrides or {})
        self._platform: dict[str, PlatformRules] = {}

    def get(self, platform: str, key: str):
        p = self.raw.get("platforms", {}).get(platform, {})
        if key not in p:
            return self.raw[key]
        v, base = p[key], self.raw.get(key)
        if isinstance(v, dict) and isinstance(base, dict):
            return _merge(base, v)  # a partial per-platform table keeps the global entries
        return v

    def for_platform(self, platform: str) -> PlatformRules:
        pr = self._platform.get(platform)
        if pr is None:
            g = lambda k: self.get(platform, k)  # noqa: E731
            pr = PlatformRules(
                platform=platform,
                ship_after_payment_us={k: int(v * H) for k, v in g("ship_after_payment_hours").items()},
                ship_warning_before_us=int(g("ship_warning_before_hours") * H),
                pickup_timeout_us=int(g("pickup_timeout_hours") * H),
                transit_timeout_us={k: int(v * H) for k, v in g("transit_timeout_hours").items()},
                delivery_timeout_us=int(g("delivery_timeout_hours") * H),
                refund_response_warning_us=int(g("refund_response_warning_hours") * H),
                refund_response_overdue_us=int(g("refund_response_overdue_hours") * H),
                return_receipt_warning_us=int(g("return_receipt_warning_hours") * H),
                return_receipt_overdue_us=int(g("return_receipt_overdue_hours") * H),
                cod_proof_overdue_us=int(g("cod_proof_overdue_hours") * H),
                fresh_claim_window_us=int(g("fresh_claim_window_hours") * H),
                raw={k: g(k) for k in self.raw if k != "platforms"},
            )
            self._platform[platform] = pr
        return pr


DEFAULT_RULES = Rules()
