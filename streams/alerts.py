"""Alert records (events.md "Output: alerts") and their Chinese summaries."""

from __future__ import annotations

from .clock import fmt_minute, fmt_ts

SEVERITY = {
    "ship_warning": "warning",
    "ship_overdue": "critical",
    "pickup_timeout": "warning",
    "transit_timeout": "warning",
    "delivery_timeout": "warning",
    "customs_exception": "critical",
    "carrier_exception": "critical",
    "refund_response_warning": "warning",
    "refund_response_overdue": "critical",
    "return_receipt_warning": "warning",
    "return_receipt_overdue": "critical",
    "cod_proof_overdue": "critical",
    "fresh_claim": "info",
    "fresh_claim_rejected": "critical",
    "daily_cap_warning": "warning",
    "daily_cap_reached": "critical",
    "level_changed": "info",
}

# Kinds that may fire more than once for one subject: their ids end in :{n}.
NUMBERED = frozenset(("transit_timeout", "delivery_timeout", "customs_exception", "carrier_exception"))

PLATFORM_NAMES = {"xiaohongshu": "小红书", "douyin": "抖音", "kuaishou": "快手", "jd": "京东", "tmall": "天猫"}
CUSTOMS_NAMES = {"held": "海关扣留", "exception": "清关异常", "declared": "已申报", "cleared": "已放行"}
EXCEPTION_NAMES = {"lost": "丢件", "damaged": "破损", "returned": "退回", "rejected": "拒收",
                   "address": "地址异常", "other": "其他异常"}


def yuan(fen: int | float) -> str:
    return f"{fen / 100:.2f}"


def make_alert(kind: str, status: str, platform: str, shop_id: str, alert_id: str, at_us: int,
               summary: str, *, order_id: str | None = None, refund_id: str | None = None,
               session_id: str | None = None, due_us: int | None = None, details: dict | None = None,
               severity: str | None = None) -> dict:
    a = {
        "alert_id": alert_id,
        "kind": kind,
        "severity": severity or SEVERITY[kind],
        "status": status,
        "platform": platform,
        "shop_id": shop_id,
    }
    if order_id is not None:
        a["order_id"] = order_id
    if refund_id is not None:
        a["refund_id"] = refund_id
    if session_id is not None:
        a["session_id"] = session_id
    a["at"] = fmt_ts(at_us)
    if due_us is not None:
        a["due_at"] = fmt_ts(due_us)
    a["summary"] = summary
    a["details"] = details or {}
    return a


def parcel(carrier: str | None, tracking_no: str | None) -> str:
    if carrier and tracking_no:
        return f"{carrier} {tracking_no}"
    return carrier or tracking_no or "无运单号"


# What the chat reads for each kind. A template names facts of the order (order_id, live,
# carrier, tracking_no, lst_us), of the refund (refund_id), the alert's due time and its
# details; the derived ones (a minute, yuan, a name) are made by ``_Facts`` when named.
SUMMARIES = {
    "ship_warning": "订单 {order_id}（{live_name}）最晚发货时间 {lst}，仍未发货，请尽快发货",
    "ship_overdue": "订单 {order_id}（{live_name}）已超过最晚发货时间 {lst}，仍未发货{compensation}",
    "pickup_timeout": "订单 {order_id} 发货后超过 {hours:g} 小时仍无揽收记录（{parcel}），请联系快递上门揽收",
    "transit_timeout":
        "订单 {order_id} 包裹 {hours:g} 小时无物流更新（{parcel}，最后扫描 {last_scan}），请联系快递核实",
    "delivery_timeout": "订单 {order_id} 派件后超过 {hours:g} 小时仍未签收（{parcel}），请联系快递确认派送",
    "customs_exception": "订单 {order_id} {customs}（{parcel}），请尽快处理清关资料",
    "carrier_exception": "订单 {order_id} 物流异常：{exception}（{parcel}），请联系快递和买家",
    "refund_response_warning":
        "售后单 {refund_id}（订单 {order_id}）已等待商家处理 {hours:g} 小时，{auto} 将超时自动同意，请尽快处理",
    "refund_response_overdue":
        "售后单 {refund_id}（订单 {order_id}）商家超时未处理，平台将自动同意退款（截止 {due}）",
    "return_receipt_warning":
        "售后单 {refund_id}（订单 {order_id}）退货已寄回 {days:g} 天仍未确认收货，{auto} 将自动确认收货并退款",
    "return_receipt_overdue":
        "售后单 {refund_id}（订单 {order_id}）退货超时未确认收货，平台将自动确认收货并退款",
    "cod_proof_overdue":
        "货到付款售后单 {refund_id}（订单 {order_id}）收到退货超过 {hours:g} 小时仍未上传退款凭证",
    "fresh_claim":
        "生鲜坏单包赔：售后单 {refund_id}（订单 {order_id}）签收 24 小时内申请，应赔付 {refund_due} 元，请及时处理",
    "fresh_claim_rejected":
        "生鲜坏单包赔被拒绝：售后单 {refund_id}（订单 {order_id}），未履约需额外赔付 {extra_payout} 元",
}

_DERIVED = {
    "live_name": lambda f: "直播订单" if f.get("live") else "非直播订单",
    "lst": lambda f: fmt_minute(f["lst_us"]),
    "compensation": lambda f: (f"；买家可申请延迟发货赔付 {yuan(f['compensation_fen'])} 元"
                               if f.get("compensation_fen") else ""),
    "parcel": lambda f: parcel(f.get("carrier"), f.get("tracking_no")),
    "last_scan": lambda f: fmt_minute(f["last_scan_us"]),
    "customs": lambda f: CUSTOMS_NAMES.get(f.get("status"), "清关异常"),
    "exception": lambda f: EXCEPTION_NAMES.get(f.get("reason"), "其他异常"),
    "auto": lambda f: fmt_minute(f["auto_us"]),
    "days": lambda f: f["hours"] / 24,
    "due": lambda f: fmt_minute(f["due_us"]) if f.get("due_us") is not None else "",
    "refund_due": lambda f: yuan(f["refund_due_fen"]),
    "extra_payout": lambda f: yuan(f["extra_payout_fen"]),
}


class _Facts(dict):
    """The facts a summary template reads, deriving the others on first use."""

    def __missing__(self, name: str):
        value = self[name] = _DERIVED[name](self)
        return value


def order_summary(kind: str, order: dict, due_us: int | None, extra: dict) -> str:
    """Summary of an order-level alert; ``order`` is a small dict of the order's facts."""
    facts = _Facts(extra, **order, due_us=due_us)
    template = SUMMARIES.get(kind)
    return template.format_map(facts) if template else f"订单 {order['order_id']} {kind} {facts['due']}"


def refund_summary(kind: str, refund_id: str, order_id: str, due_us: int | None, extra: dict) -> str:
    template = SUMMARIES.get(kind)
    if template is None:
        return f"售后单 {refund_id} {kind}"
    return template.format_map(_Facts(extra, refund_id=refund_id, order_id=order_id, due_us=due_us))


def resolved_summary(kind: str, subject: str) -> str:
    return f"已恢复：{kind} {subject}"
