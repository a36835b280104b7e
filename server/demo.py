"""Demo data and the scripted story ``python -m server demo`` tells over HTTP."""
from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any, Callable, Iterator

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.accounts.models import Staff, StaffRole
from server.accounts.services import create_staff
from server.clock import local
from server.db import utcnow
from server.demo_business import seed_business
from server.orders.catalog import add_sku, create_product
from server.orders.models import Product
from server.points.models import ItemKind, RedemptionItem
from server.points.redemption import create_item, points_text
from server.reports import rollups

#: Demo console accounts. seed-demo refuses to run outside the sandbox, so these never reach production.
DEMO_STAFF = (("owner", "owner"), ("ops", "operations"), ("finance", "finance"))
DEMO_PASSWORD = "demo-pass-2026"


def seed_demo(sess: Session) -> Iterator[str]:
    """Create whatever demo data is missing; running it twice changes nothing."""
    for username, role in DEMO_STAFF:
        if sess.scalar(select(Staff.id).where(Staff.username == username)) is None:
            create_staff(sess, username=username, password=DEMO_PASSWORD, role=StaffRole(role))
            yield f"staff {username} ({role}) created, password {DEMO_PASSWORD}"
        else:
            yield f"staff {username} ({role}) already there"
    yield from _seed_redemption_items(sess)
    yield from _seed_catalog(sess)

    yield from seed_business(sess, DEMO_PRODUCT[0])
    yield from _roll_up_reports(sess)


def _roll_up_reports(sess: Session) -> Iterator[str]:
    """The demo's history is back-dated, so its days are rolled up for the reports and the dashboard trend at once."""
    sess.flush()
    first = rollups.data_start(sess)
    if first is None:
        return
    days = rollups.refresh_days(sess, rollups.days_between(first, local(utcnow()).date()))
    yield f"report rollups refreshed for {days} days"


#: A product to buy in the demo: ¥100 a box, so the rewards are easy to check (0.5% = 0.50 points).
DEMO_PRODUCT = ("明前龙井礼盒", "250g", 10_000, 100)


def _seed_catalog(sess: Session) -> Iterator[str]:
    title, sku_name, price_fen, stock = DEMO_PRODUCT
    if sess.scalar(select(Product.id).where(Product.title == title)) is not None:
        yield f"product {title} already there"
        return
    product = create_product(sess, title=title, subtitle="产地直发", status="on_sale")
    add_sku(sess, product.id, name=sku_name, price_fen=price_fen, stock=stock)
    yield f"product {title} ({sku_name}, ¥{price_fen / 100:.2f}, stock {stock}) stocked"
    # Listed after the demo's own product (a lower sort), so the demo story still buys that one.
    for extra_title, subtitle, status, presale_days, skus in DEMO_MORE_PRODUCTS:
        extra = create_product(
            sess,
            title=extra_title,
            subtitle=subtitle,
            status=status,
            presale=presale_days is not None,
            ship_date=utcnow() + timedelta(days=presale_days) if presale_days is not None else None,
            sort=-1,
        )
        for name, fen, units in skus:
            add_sku(sess, extra.id, name=name, price_fen=fen, stock=units)
    yield f"{len(DEMO_MORE_PRODUCTS)} more products: one on pre-sale, one off sale"


#: More of the catalog for the console: (title, subtitle, status, pre-sale ships in N days or None, SKUs (name, fen, stock)).
DEMO_MORE_PRODUCTS = (
    ("雨前龙井（预售）", "新茶预售，清明后发货", "on_sale", 20, (("100g", 6_800, 50), ("250g 礼盒", 15_800, 20))),
    ("安吉白茶", "已售罄，暂时下架", "off_sale", None, (("200g", 12_900, 0),)),
)


#: One item of each kind for the points shop (seed 003 3.2): goods from 2,000 points, event access, invite codes.
DEMO_REDEMPTION_ITEMS = (
    ("goods", "蓝牙降噪耳机", 200_000, 20, "积分商品：每积分 = 1 元，2000 积分起兑。"),
    ("privilege", "PMCAFF 线下活动入场资格", 50_000, 50, "兑换积分权限：线上线下活动资格。"),
    # Priced by the invite_code_points setting (100 points by default).
    ("invite_code", "邀请码", None, None, "100 积分兑换 1 个邀请码；好友用它登录即绑定为你的邀请。"),
)


def _seed_redemption_items(sess: Session) -> Iterator[str]:
    for sort, (kind, title, price, stock, description) in enumerate(DEMO_REDEMPTION_ITEMS):
        if sess.scalar(select(RedemptionItem.id).where(RedemptionItem.title == title)) is not None:
            yield f"redemption item {title} already there"
            continue
        item = create_item(sess, kind=ItemKind(kind), title=title, price=price, stock=stock, description=description, sort=sort)
        yield f"redemption item {title} ({kind}, {points_text(item.price)} points) stocked"


class _Story:
    """One HTTP conversation with the server, narrated."""

    def __init__(self, base_url: str, echo: Callable[[str], Any]) -> None:
        self.base = base_url
        self.echo = echo
        self.http = requests.Session()
        self.failures = 0
        self.step_no = 0
        self.sandbox_url = ""

    def step(self, title: str) -> None:
        self.step_no += 1
        self.echo(f"\n{self.step_no}. {title}")

    def call(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = self.http.request(method, self.base + path, headers=headers, timeout=15, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = {"raw": response.text[:200]}
        self.echo(f"   {method} {path} -> HTTP {response.status_code} {json.dumps(body, ensure_ascii=False)[:300]}")
        return response.status_code, body

    def check(self, ok: bool, claim: str) -> None:
        self.echo(f"   {'ok ' if ok else 'FAIL'} {claim}")
        if not ok:
            self.failures += 1

    def sign_in(self, name: str) -> tuple[str, int]:
        status, body = self.call("POST", "/api/v1/auth/wx-login", json={"code": f"sandbox:{name}"})
        self.check(status == 200 and body.get("code") == 0, f"{name} is signed in")
        data = body.get("data") or {}
        return data.get("token", ""), (data.get("user") or {}).get("id", 0)


def _referral_and_order_chapter(story: _Story, alice_token: str, alice_id: int) -> None:
    """carol arrives through alice's poster, buys, pays through the sandbox; alice earns pending points."""
    story.step("alice asks for her poster: a mini-program code whose scene stands for her")
    status, body = story.call("POST", "/api/v1/referral/posters", token=alice_token, json={})
    poster = body.get("data") or {}
    story.check(status == 200 and bool(poster.get("scene")), f"poster with scene {poster.get('scene')} at {poster.get('image_url')}")

    story.step("carol scans alice's poster and opens the mini-program")
    status, body = story.call("POST", "/api/v1/auth/wx-login", json={"code": "sandbox:carol", "scene": poster.get("scene", "")})
    carol = body.get("data") or {}
    carol_token = carol.get("token", "")
    story.check((carol.get("binding") or {}).get("inviter", {}).get("id") == alice_id, "carol's inviter is alice")
    status, body = story.call("GET", "/api/v1/referral/team", token=alice_token)
    story.check(any(m["id"] == (carol.get("user") or {}).get("id") for m in (body.get("data") or {}).get("direct", [])), "carol is in alice's direct team, nickname masked")

    story.step("carol buys a box of tea and pays with WeChat Pay (the sandbox plays her paying)")
    status, body = story.call("GET", "/api/v1/products")
    items = (body.get("data") or {}).get("items") or []
    if not items:
        story.check(False, "the demo catalog is there (run `python -m server seed-demo`)")
        return
    sku_id = items[0]["skus"][0]["id"]
    status, body = story.call("POST", "/api/v1/orders", token=carol_token, json={"items": [{"sku_id": sku_id, "quantity": 1}]})
    order = body.get("data") or {}
    story.check(status == 201 and order.get("status") == "created", f"order {order.get('out_trade_no')} for ¥{order.get('total_fee', 0) / 100:.2f}")
    status, body = story.call("POST", f"/api/v1/orders/{order.get('id')}/pay", token=carol_token)
    story.check(status == 200 and "paySign" in (body.get("data") or {}), "wx.requestPayment parameters from a real prepay")
    sandbox = story.sandbox_url
    response = story.http.post(f"{sandbox}/sandbox/pay/pay", json={"out_trade_no": order.get("out_trade_no"), "notify": True}, timeout=15)
    story.echo(f"   POST {sandbox}/sandbox/pay/pay -> HTTP {response.status_code} {response.text[:200]}")
    status, body = story.call("GET", f"/api/v1/orders/{order.get('id')}", token=carol_token)
    events = [e["event"] for e in (body.get("data") or {}).get("timeline", [])]
    story.check((body.get("data") or {}).get("status") == "paid" and events.count("paid") == 1, f"paid once; timeline {events}")

    story.step("alice earned points, not cash: pending until the order completes and settles")
    expected = order.get("total_fee", 0) // 200
    for _ in range(20):  # points are credited off the request, a moment after the notification
        status, body = story.call("GET", "/api/v1/points", token=alice_token)
        if (body.get("data") or {}).get("pending") == expected:
            break
        time.sleep(0.25)
    story.check((body.get("data") or {}).get("pending") == expected, "0.5% of the order, in hundredths of a point, pending")


def run_demo(base_url: str, echo: Callable[[str], Any], sandbox_url: str | None = None) -> bool:
    """Tell the sign-in story against a running sandbox server; True if every claim held.

    Without ``sandbox_url``, the server's health check says where its WeChat sandbox is.
    """
    story = _Story(base_url, echo)
    echo(f"Demo against {base_url}")
    try:
        story.step("The server is up")
        status, body = story.call("GET", "/healthz")
        story.check(status == 200, "health check answers")
        story.sandbox_url = (sandbox_url or (body.get("data") or {}).get("sandbox_url") or "").rstrip("/")
        story.check(bool(story.sandbox_url), f"the server runs the WeChat sandbox, at {story.sandbox_url or '(none)'}")
        if not story.sandbox_url:
            return False

        story.step("alice opens the mini-program: wx.login() gives a code, the server exchanges it")
        alice_token, alice_id = story.sign_in("alice")
        story.step("alice signs in again on another day")
        alice_token2, alice_id2 = story.sign_in("alice")
        story.check(alice_id == alice_id2, f"same member id both times ({alice_id})")
        story.step("bob signs in")
        _, bob_id = story.sign_in("bob")
        story.check(bob_id != alice_id, f"bob is a different member ({bob_id})")

        story.step("alice reads her own profile with her token")
        status, body = story.call("GET", "/api/v1/me", token=alice_token)
        story.check(status == 200 and (body.get("data") or {}).get("id") == alice_id, "the token says who she is")

        story.step("alice sets a Chinese nickname and shares her phone number")
        status, body = story.call("PATCH", "/api/v1/me", token=alice_token, json={"nickname": "爱丽丝"})
        story.check(status == 200 and (body.get("data") or {}).get("nickname") == "爱丽丝", "nickname saved")
        status, body = story.call("POST", "/api/v1/me/phone", token=alice_token, json={"code": "sandbox-phone:13800138000"})
        story.check((body.get("data") or {}).get("phone") == "138****8000", "phone stored, shown masked")

        story.step("Someone changes one character of alice's token")
        last = alice_token[-1]
        forged = alice_token[:-1] + ("A" if last != "A" else "B")
        status, body = story.call("GET", "/api/v1/me", token=forged)
        story.check(status == 401 and body.get("code", 0) != 0, "refused with 401 in the envelope")

        story.step("A client sends a body that is not JSON, and a code WeChat never issued")
        status, body = story.call(
            "POST", "/api/v1/auth/wx-login", data="code=abc", headers={"Content-Type": "application/json"}
        )
        story.check(status == 400, "not JSON: 400, not 500")
        status, body = story.call("POST", "/api/v1/auth/wx-login", json={"code": "made-up"})
        story.check(status == 400 and body.get("code") == 40010, "WeChat's 40029 becomes our 40010")

        story.step("alice signs out; her first token stops working, the second still works")
        story.call("POST", "/api/v1/auth/logout", token=alice_token)
        status, _ = story.call("GET", "/api/v1/me", token=alice_token)
        story.check(status == 401, "signed-out token refused")
        status, _ = story.call("GET", "/api/v1/me", token=alice_token2)
        story.check(status == 200, "other session unaffected")

        _referral_and_order_chapter(story, alice_token2, alice_id)

        story.step("The owner signs in to the console and lists members")
        status, body = story.call(
            "POST", "/admin/api/v1/auth/login", json={"username": "owner", "password": DEMO_PASSWORD}
        )
        staff_token = (body.get("data") or {}).get("token", "")
        story.check(status == 200, "owner signed in (run `python -m server seed-demo` first if not)")
        status, body = story.call("GET", "/admin/api/v1/members?page_size=5", token=staff_token)
        story.check(status == 200 and (body.get("data") or {}).get("total", 0) >= 2, "alice and bob are members")
    except requests.RequestException as error:
        echo(f"\ncannot reach {base_url}: {error}")
        return False
    echo(f"\n{'All claims held.' if not story.failures else f'{story.failures} claim(s) failed.'}")
    return story.failures == 0
