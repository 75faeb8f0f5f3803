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


def order_summary(kind: str, order: dict, due_us: int | None, extra: dict) -> str:
    """Summary of an order-level alert; ``order`` is a small dict of the order's facts."""
    oid = order["order_id"]
    live = "直播订单" if order.get("live") else "非直播订单"
    pc = parcel(order.get("carrier"), order.get("tracking_no"))
    due = fmt_minute(due_us) if due_us is not None else ""
    if kind == "ship_warning":
        return f"订单 {oid}（{live}）最晚发货时间 {fmt_minute(order['lst_us'])}，仍未发货，请尽快发货"
    if kind == "ship_overdue":
        s = f"订单 {oid}（{live}）已超过最晚发货时间 {fmt_minute(order['lst_us'])}，仍未发货"
        if extra.get("compensation_fen"):
            s += f"；买家可申请延迟发货赔付 {yuan(extra['compensation_fen'])} 元"
        return s
    if kind == "pickup_timeout":
        return f"订单 {oid} 发货后超过 {extra['hours']:g} 小时仍无揽收记录（{pc}），请联系快递上门揽收"
    if kind == "transit_timeout":
        return (f"订单 {oid} 包裹 {extra['hours']:g} 小时无物流更新（{pc}，最后扫描 "
                f"{fmt_minute(extra['last_scan_us'])}），请联系快递核实")
    if kind == "delivery_timeout":
        return f"订单 {oid} 派件后超过 {extra['hours']:g} 小时仍未签收（{pc}），请联系快递确认派送"
    if kind == "customs_exception":
        return f"订单 {oid} {CUSTOMS_NAMES.get(extra.get('status'), '清关异常')}（{pc}），请尽快处理清关资料"
    if kind == "carrier_exception":
        return f"订单 {oid} 物流异常：{EXCEPTION_NAMES.get(extra.get('reason'), '其他异常')}（{pc}），请联系快递和买家"
    return f"订单 {oid} {kind} {due}"


def refund_summary(kind: str, refund_id: str, order_id: str, due_us: int | None, extra: dict) -> str:
    due = fmt_minute(due_us) if due_us is not None else ""
    if kind == "refund_response_warning":
        return (f"售后单 {refund_id}（订单 {order_id}）已等待商家处理 {extra['hours']:g} 小时，"
                f"{fmt_minute(extra['auto_us'])} 将超时自动同意，请尽快处理")
    if kind == "refund_response_overdue":
        return f"售后单 {refund_id}（订单 {order_id}）商家超时未处理，平台将自动同意退款（截止 {due}）"
    if kind == "return_receipt_warning":
        return (f"售后单 {refund_id}（订单 {order_id}）退货已寄回 {extra['hours'] / 24:g} 天仍未确认收货，"
                f"{fmt_minute(extra['auto_us'])} 将自动确认收货并退款")
    if kind == "return_receipt_overdue":
        return f"售后单 {refund_id}（订单 {order_id}）退货超时未确认收货，平台将自动确认收货并退款"
    if kind == "cod_proof_overdue":
        return f"货到付款售后单 {refund_id}（订单 {order_id}）收到退货超过 {extra['hours']:g} 小时仍未上传退款凭证"
    if kind == "fresh_claim":
        return (f"生鲜坏单包赔：售后单 {refund_id}（订单 {order_id}）签收 24 小时内申请，"
                f"应赔付 {yuan(extra['refund_due_fen'])} 元，请及时处理")
    if kind == "fresh_claim_rejected":
        return (f"生鲜坏单包赔被拒绝：售后单 {refund_id}（订单 {order_id}），未履约需额外赔付 "
                f"{yuan(extra['extra_payout_fen'])} 元")
    return f"售后单 {refund_id} {kind}"


def resolved_summary(kind: str, subject: str) -> str:
    return f"已恢复：{kind} {subject}"
