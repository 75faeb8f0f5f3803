"""The four chat vendors' webhook endpoints on 127.0.0.1, for tests: checks, faults, records.

:class:`Receiver` plays 飞书/Lark, 钉钉, 企业微信 and Slack and re-implements
each vendor's check *independently* of the code under test (it imports
nothing of shopwatch), from the vendors' documentation:

- 飞书/Lark: body ``timestamp`` (s) and ``sign`` = base64(HMAC-SHA256(key =
  "{timestamp}\\n{secret}", msg = b"")); off by more than 1 h or not matching:
  HTTP 200 ``{"code": 19021, ...}``; ``msg_type`` text/interactive shapes; a
  request body over 20,000 bytes (the custom bot guide: "请求体大小不能超过
  20K") or a bad shape: HTTP 400 ``{"code": 9499, "msg": "Bad Request"}``.
- 钉钉: query ``timestamp`` (ms) and ``sign`` = urlencode(base64(HMAC-SHA256(key =
  secret, msg = "{timestamp}\\n{secret}"))), decoded here as a form query would
  be (so an un-encoded "+" breaks it); errors ``{"errcode": 310000, ...}``;
  the access_token must be the robot's (300001); ``msgtype`` markdown/text
  shapes, ``at`` shape; a text over 20,000 bytes: 460101.
- 企业微信: the ``key`` must be the robot's (``{"errcode": 93000, ...}``);
  ``markdown.content`` present and at most 4,096 bytes (40058).
- Slack: ``text`` and ``blocks`` shapes (HTTP 400 ``invalid_blocks`` /
  ``no_text`` as Slack answers): at most 50 blocks, a header at most 150
  characters, a section's text at most 3,000 and its fields at most 10 of
  2,000; with a signing secret, ``X-Slack-Signature`` = "v0=" +
  hex(HMAC-SHA256(secret, "v0:{ts}:" + body)) and a timestamp within 5
  minutes (HTTP 401 otherwise).

**Running.** On the test's loop: ``async with Receiver() as r: ...`` (the
unit tests' style: sync tests running ``asyncio.run``). On a thread of its
own (broker tests, where workers are subprocesses): ``with Receiver() as r:
...`` or ``r.start()`` / ``r.stop()``. ``r.url(vendor)``,
``r.config(vendor, **extra)`` and ``r.sinks_env(*vendors)`` (a
``SHOPWATCH_SINKS`` value) point sinks at it.

**Faults**, switched at run time from any thread (the test's, or a coroutine
on the receiver's loop), effective at once, ``vendor=None`` meaning all:

- ``r.refuse(S)``: stop listening for S seconds (new connections are
  refused; a request on a kept-alive connection has its connection reset);
- ``r.fail(S, vendor=None, status=500)``: answer HTTP ``status`` for S seconds;
- ``r.hang(S, vendor=None)``: accept requests arriving in the next S
  seconds and never answer them (they are dropped when the receiver stops);
- ``r.throttle(vendor, per_minute, per_second=None, penalty=None)``: past
  ``per_minute`` accepted messages in the last 60 s (or ``per_second`` in
  the last second), answer as the vendor does when throttling — 钉钉
  ``{"errcode": 130101, "errmsg": "send too fast, ..."}``, 企业微信
  ``{"errcode": 45009, ...}``, 飞书 ``{"code": 11232, ...}``, Slack HTTP 429
  with ``Retry-After`` — and keep doing so for ``penalty`` seconds (钉钉:
  600 by default, as 钉钉 does; the others: until the window has room);
  ``r.unthrottle(vendor=None)``;
- ``r.fail_next(vendor, *statuses)``: answer these HTTP statuses first;
- ``r.clear()``: every fault off (listening again at once).

**Records** (read with the methods, which take the lock): ``r.hits``
(requests per vendor), ``r.accepted[vendor]`` (parsed bodies),
``r.rejected[vendor]`` (answers of refused messages), ``r.throttled``
(throttle answers per vendor) and ``r.messages``: one :class:`Message` per
accepted message with the alert ids it lists, the alert changes
(``(alert_id, "firing" | "resolved" | "folded")``), the ``另有 N`` count and
the mentions. The convention (shopwatch.streams.digest): every alert a
message lists appears as its full ``alert_id`` in a backtick code span
(Slack: HTML-escaped ``&<>``) on a line that carries ``✅`` exactly when the
change is a resolution (``已发生并恢复``: fired and resolved, never
delivered firing). ``r.alert_ids()``, ``r.changes()`` (a folded change
counts as both its firing and its resolution) and ``r.omitted()`` sum them
up; ``r.wait_for(pred, timeout)`` / ``await r.wait_until(pred, timeout)``
poll.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import hmac
import html
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from aiohttp import web

FEISHU_SECRET = "fs-secret-0123456789"
DINGTALK_SECRET = "SECd1n9+t4lk/s3cr3t=="  # characters that base64 and URL encoding both care about
DINGTALK_TOKEN = "dt-access-token"
WECOM_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_PATH = "/services/T000/B000/XXXXXXXX"

VENDORS = ("feishu", "dingtalk", "wecom", "slack")

ALERT_ID_RE = re.compile(r"`([a-z][a-z_]*:(?:xiaohongshu|douyin|kuaishou|jd|tmall):[^`\n]+)`")
OMITTED_RE = re.compile(r"另有 (\d+) [单条]")
FOLDED = "已发生并恢复"
RESOLVED = "✅"

DINGTALK_MAX_TEXT = 20_000  # bytes
WECOM_MAX_CONTENT = 4096  # bytes
FEISHU_MAX_BODY = 20_000  # bytes
SLACK_MAX_BLOCKS, SLACK_MAX_SECTION, SLACK_MAX_HEADER, SLACK_MAX_TEXT = 50, 3000, 150, 40_000

DEFAULT_PENALTY = {"dingtalk": 600.0, "wecom": 0.0, "feishu": 0.0, "slack": 0.0}


@dataclass(frozen=True)
class Message:
    """One accepted message."""

    vendor: str
    body: dict = field(repr=False)
    alert_ids: tuple[str, ...]  # each once, in order of appearance
    changes: tuple[tuple[str, str], ...]  # (alert_id, firing | resolved | folded)
    omitted: int  # "另有 N 单/条"
    mentions: tuple[str, ...]
    at: float  # time.time() when accepted


@dataclass
class _Throttle:
    per_minute: int
    per_second: int | None
    penalty: float
    times: deque = field(default_factory=deque)
    penalty_until: float = 0.0


def _strings(obj, skip=("sign", "timestamp")) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k not in skip:
                yield from _strings(v, skip)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v, skip)


def read_message(vendor: str, body: dict) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...], int, tuple[str, ...]]:
    """(alert ids, changes, omitted, mentions) of an accepted message body."""
    ids: dict[str, None] = {}
    changes: dict[tuple[str, str], None] = {}
    omitted = 0
    for s in _strings(body):
        if vendor == "slack":
            s = html.unescape(s)
        for ln in s.split("\n"):
            for aid in ALERT_ID_RE.findall(ln):
                ids[aid] = None
                status = "folded" if FOLDED in ln else "resolved" if RESOLVED in ln else "firing"
                changes[(aid, status)] = None
            for n in OMITTED_RE.findall(ln):
                omitted += int(n)
    mentions: list[str] = []
    if vendor == "dingtalk":
        at = body.get("at") or {}
        mentions = [*at.get("atMobiles", []), *at.get("atUserIds", [])]
    else:
        pattern = {"wecom": r"<@([^>\s]+)>", "feishu": r"<at (?:id|user_id)=\"?([^\">\s]+)\"?>",
                   "slack": r"<@([^>|\s]+)"}[vendor]
        for s in _strings(body):
            mentions += re.findall(pattern, s)
    return tuple(ids), tuple(changes), omitted, tuple(dict.fromkeys(mentions))


class Receiver:
    """The vendors' webhook endpoints, each with its own check; faults; records."""

    def __init__(self, *, feishu_secret: str | None = FEISHU_SECRET, dingtalk_secret: str | None = DINGTALK_SECRET,
                 slack_secret: str | None = SLACK_SECRET, delay: float = 0.0, host: str = "127.0.0.1") -> None:
        self.feishu_secret = feishu_secret
        self.dingtalk_secret = dingtalk_secret
        self.slack_secret = slack_secret
        self.delay = delay
        self.host = host
        self.port = 0
        self.base = ""
        self._lock = threading.RLock()
        self.hits: dict[str, int] = dict.fromkeys(VENDORS, 0)
        self.accepted: dict[str, list[dict]] = {v: [] for v in VENDORS}
        self.rejected: dict[str, list] = {v: [] for v in VENDORS}
        self.throttled: dict[str, int] = dict.fromkeys(VENDORS, 0)
        self.messages: list[Message] = []
        self.plan: dict[str, list[int]] = {}  # vendor -> HTTP statuses to answer first
        self._refuse_until = 0.0
        self._fail: dict[str | None, tuple[float, int]] = {}
        self._hang: dict[str | None, float] = {}
        self._throttles: dict[str, _Throttle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._reopen: asyncio.TimerHandle | None = None
        self._stopped: asyncio.Event | None = None

    # ------------------------------------------------------------------ where

    def url(self, vendor: str) -> str:
        return {
            "feishu": f"{self.base}/open-apis/bot/v2/hook/fs-hook-id",
            "dingtalk": f"{self.base}/robot/send?access_token={DINGTALK_TOKEN}",
            "wecom": f"{self.base}/cgi-bin/webhook/send?key={WECOM_KEY}",
            "slack": f"{self.base}{SLACK_PATH}",
        }[vendor]

    def config(self, vendor: str, **extra) -> dict:
        """A SHOPWATCH_SINKS entry for ``vendor`` with this receiver's secrets (None drops a key)."""
        c = {"type": vendor, "url": self.url(vendor)}
        c.update({"feishu": {"secret": self.feishu_secret}, "dingtalk": {"secret": self.dingtalk_secret},
                  "wecom": {}, "slack": {"signing_secret": self.slack_secret}}[vendor])
        c.update(extra)
        return {k: v for k, v in c.items() if v is not None}

    def sinks_env(self, *vendors: str, **extra) -> str:
        return json.dumps([self.config(v, **extra) for v in (vendors or VENDORS)])

    # ------------------------------------------------------------------ running

    async def __aenter__(self) -> Receiver:
        await self._start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._stop()

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Run on a thread of its own (returns once listening)."""
        loop = asyncio.new_event_loop()
        started: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:  # noqa: BLE001 - handed to start()
                started.set_exception(exc)
                loop.close()
                return
            started.set_result(None)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="chat-receiver", daemon=True)
        self._thread.start()
        started.result(timeout=30)

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop = self._loop
        asyncio.run_coroutine_threadsafe(self._stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=30)
        self._thread = None

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stopped = asyncio.Event()
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/open-apis/bot/v2/hook/{hook}", self._wrap("feishu", self.feishu))
        app.router.add_post("/robot/send", self._wrap("dingtalk", self.dingtalk))
        app.router.add_post("/cgi-bin/webhook/send", self._wrap("wecom", self.wecom))
        app.router.add_post("/services/{a}/{b}/{c}", self._wrap("slack", self.slack))
        self._runner = web.AppRunner(app, shutdown_timeout=2.0, access_log=None)
        await self._runner.setup()
        self._server = await self._loop.create_server(self._runner.server, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.base = f"http://{self.host}:{self.port}"

    async def _stop(self) -> None:
        assert self._stopped is not None and self._runner is not None
        self._stopped.set()
        if self._reopen is not None:
            self._reopen.cancel()
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._runner.cleanup()

    def _on_loop(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the receiver's loop now (waiting for it from another thread)."""
        if self._loop is None or threading.get_ident() == self._loop_thread:
            fn()
            return
        done: concurrent.futures.Future = concurrent.futures.Future()

        def call() -> None:
            try:
                fn()
                done.set_result(None)
            except BaseException as exc:  # noqa: BLE001
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(call)
        done.result(timeout=10)

    # ------------------------------------------------------------------ faults

    def refuse(self, seconds: float) -> None:
        """Stop listening for ``seconds`` (kept-alive connections are reset on use)."""
        with self._lock:
            self._refuse_until = time.monotonic() + seconds
        self._on_loop(lambda: self._close_listener(seconds))

    def _close_listener(self, seconds: float) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._reopen is not None:
            self._reopen.cancel()
        assert self._loop is not None
        self._reopen = self._loop.call_later(max(0.0, seconds), lambda: self._loop.create_task(self._listen()))

    async def _listen(self, tries: int = 100) -> None:
        assert self._loop is not None and self._stopped is not None and self._runner is not None
        if self._stopped.is_set() or self._server is not None:
            return
        for _ in range(tries):
            try:
                self._server = await self._loop.create_server(self._runner.server, self.host, self.port,
                                                              reuse_address=True)
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"chat receiver: cannot listen on port {self.port} again")

    def fail(self, seconds: float, vendor: str | None = None, status: int = 500) -> None:
        """Answer HTTP ``status`` for ``seconds``."""
        with self._lock:
            self._fail[vendor] = (time.monotonic() + seconds, status)

    def hang(self, seconds: float, vendor: str | None = None) -> None:
        """Never answer the requests arriving in the next ``seconds``."""
        with self._lock:
            self._hang[vendor] = time.monotonic() + seconds

    def throttle(self, vendor: str, per_minute: int, *, per_second: int | None = None,
                 penalty: float | None = None) -> None:
        """Throttle ``vendor`` past ``per_minute`` (``per_second``) accepted messages,
        then for ``penalty`` seconds (default: 钉钉 600, the others 0)."""
        with self._lock:
            self._throttles[vendor] = _Throttle(per_minute, per_second,
                                                DEFAULT_PENALTY[vendor] if penalty is None else penalty)

    def unthrottle(self, vendor: str | None = None) -> None:
        with self._lock:
            if vendor is None:
                self._throttles.clear()
            else:
                self._throttles.pop(vendor, None)

    def fail_next(self, vendor: str, *statuses: int) -> None:
        with self._lock:
            self.plan.setdefault(vendor, []).extend(statuses)

    def clear(self) -> None:
        """Every fault off; listening again at once."""
        with self._lock:
            self._refuse_until = 0.0
            self._fail.clear()
            self._hang.clear()
            self._throttles.clear()
            self.plan.clear()

        def relisten() -> None:
            if self._reopen is not None:
                self._reopen.cancel()
            if self._server is None and self._loop is not None:
                self._loop.create_task(self._listen())

        self._on_loop(relisten)

    # ------------------------------------------------------------------ records

    def alert_ids(self, vendor: str | None = None) -> set[str]:
        with self._lock:
            return {a for m in self.messages if vendor in (None, m.vendor) for a in m.alert_ids}

    def changes(self, vendor: str | None = None) -> set[tuple[str, str]]:
        """(alert_id, firing | resolved) that reached the chat; folded counts as both."""
        out: set[tuple[str, str]] = set()
        with self._lock:
            for m in self.messages:
                if vendor in (None, m.vendor):
                    for aid, status in m.changes:
                        if status == "folded":
                            out |= {(aid, "firing"), (aid, "resolved")}
                        else:
                            out.add((aid, status))
        return out

    def omitted(self, vendor: str | None = None) -> int:
        with self._lock:
            return sum(m.omitted for m in self.messages if vendor in (None, m.vendor))

    def snapshot(self, vendor: str | None = None) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if vendor in (None, m.vendor)]

    def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float, interval: float = 0.05) -> bool:
        """Poll ``predicate(self)`` from a thread other than the receiver's (thread mode)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate(self):
                return True
            time.sleep(interval)
        return predicate(self)

    async def wait_until(self, predicate: Callable[[Receiver], bool], timeout: float,
                         interval: float = 0.02) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate(self):
                return True
            await asyncio.sleep(interval)
        return predicate(self)

    # ------------------------------------------------------------------ the endpoints

    def _active(self, table: dict, vendor: str, now: float):
        for key in (vendor, None):
            v = table.get(key)
            if v is not None:
                until = v[0] if isinstance(v, tuple) else v
                if now < until:
                    return v
        return None

    def _throttle_answer(self, vendor: str, now: float) -> web.Response | None:
        t = self._throttles.get(vendor)
        if t is None:
            return None
        while t.times and t.times[0] <= now - 60:
            t.times.popleft()
        wait = 0.0
        if now < t.penalty_until:
            wait = t.penalty_until - now
        else:
            last_second = sum(1 for x in t.times if x > now - 1)
            if len(t.times) >= t.per_minute:
                wait = max(t.penalty, (t.times[0] + 60 - now) if t.times else 60.0)
            elif t.per_second is not None and last_second >= t.per_second:
                wait = max(t.penalty, 1.0)
            else:
                return None
            if t.penalty > 0:
                t.penalty_until = now + t.penalty
        self.throttled[vendor] += 1
        if vendor == "dingtalk":
            return web.json_response({"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"})
        if vendor == "wecom":
            return web.json_response({"errcode": 45009, "errmsg": "api freq out of limit"})
        if vendor == "feishu":
            return web.json_response({"code": 11232, "msg": "frequency limited psm[lark.oapi.app_platform_runtime]",
                                      "data": {}})
        return web.Response(status=429, text="rate_limited", headers={"Retry-After": str(max(1, math.ceil(wait)))})

    def _wrap(self, vendor, handler):
        async def handle(request: web.Request) -> web.StreamResponse:
            now = time.monotonic()
            with self._lock:
                self.hits[vendor] += 1
                refusing = now < self._refuse_until
                hang = self._active(self._hang, vendor, now)
                failing = self._active(self._fail, vendor, now)
                planned = self.plan[vendor].pop(0) if self.plan.get(vendor) else None
            if refusing:  # a kept-alive connection while "not listening": reset it
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError
            body = await request.read()
            if hang is not None:
                assert self._stopped is not None
                await self._stopped.wait()
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError
            if self.delay:
                await asyncio.sleep(self.delay)
            if planned is not None:
                return web.Response(status=planned, text=f"planned {planned}")
            if failing is not None:
                return web.Response(status=failing[1], text="injected failure")
            with self._lock:
                throttled = self._throttle_answer(vendor, time.monotonic())
                if throttled is not None:
                    return throttled
                accepted, response = handler(request, body)
                if accepted:
                    ids, changes, omitted, mentions = read_message(vendor, accepted)
                    self.accepted[vendor].append(accepted)
                    self.messages.append(Message(vendor, accepted, ids, changes, omitted, mentions, time.time()))
                    t = self._throttles.get(vendor)
                    if t is not None:
                        t.times.append(time.monotonic())
                else:
                    self.rejected[vendor].append(response.text)
            return response

        return handle

    # -- 飞书 / Lark

    def feishu(self, request: web.Request, body: bytes):
        def error(code: int, msg: str, status: int = 200):
            return False, web.json_response({"code": code, "msg": msg, "data": {}}, status=status)

        if len(body) > FEISHU_MAX_BODY:
            return error(9499, "Bad Request", 400)
        try:
            data = json.loads(body)
        except ValueError:
            return error(9499, "Bad Request", 400)
        if not isinstance(data, dict):
            return error(9499, "Bad Request", 400)
        if self.feishu_secret is not None:
            ts, sign = data.get("timestamp"), data.get("sign")
            bad = "sign match fail or timestamp is not within one hour from current time"
            if not isinstance(ts, str | int) or not isinstance(sign, str) or not str(ts).isdigit():
                return error(19021, bad)
            string_to_sign = f"{ts}\n{self.feishu_secret}".encode()
            expected = base64.b64encode(hmac.new(string_to_sign, b"", hashlib.sha256).digest()).decode()
            if abs(time.time() - int(ts)) > 3600 or not hmac.compare_digest(expected, sign):
                return error(19021, bad)
        if data.get("msg_type") == "text":
            if not isinstance(data.get("content", {}).get("text"), str) or not data["content"]["text"]:
                return error(9499, "Bad Request", 400)
        elif data.get("msg_type") == "interactive":
            card = data.get("card")
            if not isinstance(card, dict) or not isinstance(card.get("elements"), list) or not card["elements"]:
                return error(9499, "Bad Request", 400)
            if card.get("header", {}).get("title", {}).get("tag") not in ("plain_text", "lark_md"):
                return error(9499, "Bad Request", 400)
            for el in card["elements"]:
                tag = el.get("tag") if isinstance(el, dict) else None
                if tag == "div":
                    if not isinstance(el.get("text"), dict) and not el.get("fields"):
                        return error(9499, "Bad Request", 400)
                    if isinstance(el.get("text"), dict) and el["text"].get("tag") not in ("plain_text", "lark_md"):
                        return error(9499, "Bad Request", 400)
                elif tag == "note":
                    if not el.get("elements"):
                        return error(9499, "Bad Request", 400)
                elif tag not in ("hr", "markdown", "action", "img"):
                    return error(9499, "Bad Request", 400)
        else:
            return error(9499, "Bad Request", 400)
        return data, web.json_response({"code": 0, "msg": "success", "data": {}})

    # -- 钉钉

    def dingtalk(self, request: web.Request, body: bytes):
        def error(code: int, msg: str):
            return False, web.json_response({"errcode": code, "errmsg": msg})

        query = parse_qs(request.query_string, keep_blank_values=True)  # form decoding: "+" is a space
        if query.get("access_token") != [DINGTALK_TOKEN]:
            return error(300001, "token is not exist")
        if self.dingtalk_secret is not None:
            ts, sign = query.get("timestamp", [""])[0], query.get("sign", [""])[0]
            if not ts.isdigit() or abs(time.time() * 1000 - int(ts)) > 3600 * 1000:
                return error(310000, "invalid timestamp")
            string_to_sign = f"{ts}\n{self.dingtalk_secret}".encode()
            digest = hmac.new(self.dingtalk_secret.encode(), string_to_sign, hashlib.sha256).digest()
            if not hmac.compare_digest(base64.b64encode(digest).decode(), sign):
                return error(310000, "sign not match")
        try:
            data = json.loads(body)
        except ValueError:
            return error(40035, "缺少参数 json")
        if not isinstance(data, dict):
            return error(40035, "缺少参数 json")
        if data.get("msgtype") == "markdown":
            md = data.get("markdown", {})
            if not (isinstance(md.get("title"), str) and md["title"] and isinstance(md.get("text"), str)
                    and md["text"]):
                return error(40035, "缺少参数 markdown")
            text = md["text"]
        elif data.get("msgtype") == "text":
            if not isinstance(data.get("text", {}).get("content"), str):
                return error(40035, "缺少参数 text")
            text = data["text"]["content"]
        else:
            return error(40035, "缺少参数 msgtype")
        if len(text.encode("utf-8")) > DINGTALK_MAX_TEXT:
            return error(460101, "message too long, exceed 20000 bytes")
        at = data.get("at")
        if at is not None:
            if not isinstance(at, dict):
                return error(40035, "缺少参数 at")
            for key in ("atMobiles", "atUserIds"):
                if key in at and not (isinstance(at[key], list) and all(isinstance(x, str) for x in at[key])):
                    return error(40035, f"缺少参数 {key}")
        return data, web.json_response({"errcode": 0, "errmsg": "ok"})

    # -- 企业微信

    def wecom(self, request: web.Request, body: bytes):
        def error(code: int, msg: str):
            return False, web.json_response({"errcode": code, "errmsg": msg})

        if request.query.get("key") != WECOM_KEY:
            return error(93000, "invalid webhook url")
        try:
            data = json.loads(body)
        except ValueError:
            return error(40058, "invalid json")
        if not isinstance(data, dict) or data.get("msgtype") != "markdown":
            return error(40008, "invalid message type")
        content = data.get("markdown", {}).get("content")
        if not isinstance(content, str) or not content:
            return error(41009, "missing markdown.content")
        if len(content.encode("utf-8")) > WECOM_MAX_CONTENT:
            return error(40058, "markdown.content exceed max length 4096")
        return data, web.json_response({"errcode": 0, "errmsg": "ok"})

    # -- Slack

    def slack(self, request: web.Request, body: bytes):
        def bad(text: str, status: int = 400):
            return False, web.Response(status=status, text=text)

        if request.path != SLACK_PATH:
            return bad("no_service", 404)
        if self.slack_secret is not None:
            ts = request.headers.get("X-Slack-Request-Timestamp", "")
            sig = request.headers.get("X-Slack-Signature", "")
            if not ts.isdigit() or abs(time.time() - int(ts)) > 5 * 60:
                return bad("invalid_timestamp", 401)
            base = f"v0:{ts}:".encode() + body
            expected = "v0=" + hmac.new(self.slack_secret.encode(), base, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, sig):
                return bad("invalid_signature", 401)
        try:
            data = json.loads(body)
        except ValueError:
            return bad("invalid_payload")
        if not isinstance(data, dict) or not isinstance(data.get("text"), str) or not data["text"]:
            return bad("no_text")
        if len(data["text"]) > SLACK_MAX_TEXT:
            return bad("msg_too_long")
        blocks = data.get("blocks")
        if not isinstance(blocks, list) or not blocks or len(blocks) > SLACK_MAX_BLOCKS:
            return bad("invalid_blocks")
        for b in blocks:
            kind = b.get("type") if isinstance(b, dict) else None
            if kind == "header":
                if b["text"]["type"] != "plain_text" or len(b["text"]["text"]) > SLACK_MAX_HEADER:
                    return bad("invalid_blocks")
            elif kind == "section":
                if "text" not in b and not b.get("fields"):
                    return bad("invalid_blocks")
                if "text" in b and not (0 < len(b["text"].get("text", "")) <= SLACK_MAX_SECTION):
                    return bad("invalid_blocks")
                fields = b.get("fields", [])
                if len(fields) > 10 or any(len(f.get("text", "")) > 2000 for f in fields):
                    return bad("invalid_blocks")
            elif kind == "context":
                if not b.get("elements") or len(b["elements"]) > 10:
                    return bad("invalid_blocks")
            elif kind != "divider":
                return bad("invalid_blocks")
        return data, web.Response(text="ok")
