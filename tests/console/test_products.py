"""The console's catalog pages: products, SKUs, prices in yuan stored in fen, stock and pre-sale, for every role."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from flask import Flask
from sqlalchemy import func, select, update

from server import db
from server.accounts.models import AuditEntry
from server.orders.models import Product, ProductStatus, Sku
from tests.console.conftest import Console

PRODUCT = {"title": "明前龙井", "subtitle": "产地直发", "description": "250g 罐装", "cover_url": "", "status": "on_sale", "sort": "5"}


def products(app: Flask) -> list[Product]:
    with app.app_context():
        found = list(db.session().scalars(select(Product).order_by(Product.id)))
        db.session().expunge_all()
        return found


def skus(app: Flask) -> list[Sku]:
    with app.app_context():
        found = list(db.session().scalars(select(Sku).order_by(Sku.id)))
        db.session().expunge_all()
        return found


def audit(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session().scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def created(ops: Console, app: Flask, **changes: str) -> Product:
    response = ops.post("/console/products/new", {**PRODUCT, **changes})
    assert response.status_code == 303, response.text
    product = products(app)[-1]
    assert response.location.endswith(f"/console/products/{product.id}")
    return product


def test_operations_creates_a_product_with_skus_priced_in_yuan(app: Flask, console: Callable[..., Console]) -> None:
    ops = console("operations")
    assert "创建商品" in ops.get("/console/products/new").text
    product = created(ops, app)
    assert (product.title, product.sort, product.status, product.presale) == ("明前龙井", 5, ProductStatus.on_sale, False)
    path = f"/console/products/{product.id}/skus"
    # Prices are fen by integer arithmetic: 0.29 yuan is 29 fen, 19.99 is 1999 (no 0.1 + 0.2 surprises).
    for name, price, stock, fen in (("小罐", "0.29", "3", 29), ("大罐", "19.99", "", 1_999), ("礼盒", "1,234.5", "100", 123_450)):
        assert ops.post(path, {"name": name, "price": price, "stock": stock}).status_code == 303
        assert skus(app)[-1].price_fen == fen
    assert [(s.name, s.stock) for s in skus(app)] == [("小罐", 3), ("大罐", 0), ("礼盒", 100)]
    page = ops.get(f"/console/products/{product.id}").text
    assert 'value="19.99"' in page and 'value="1234.50"' in page
    listing = ops.get("/console/products").text
    assert "明前龙井" in listing and "¥1,234.50" in listing and "缺货" in listing
    assert [a for a in audit(app) if not a.startswith("staff.")] == ["product.create", "sku.create", "sku.create", "sku.create"]


def test_bad_sku_input_changes_nothing(app: Flask, console: Callable[..., Console]) -> None:
    ops = console("operations")
    product = created(ops, app)
    path = f"/console/products/{product.id}/skus"
    for form, message in (
        ({"name": "x", "price": "1.005", "stock": "1"}, "价格应为大于 0 的金额"),
        ({"name": "x", "price": "0", "stock": "1"}, "价格应为大于 0 的金额"),
        ({"name": "x", "price": "abc", "stock": "1"}, "价格应为大于 0 的金额"),
        ({"name": "x", "price": "9" * 30, "stock": "1"}, "价格应为大于 0 的金额"),
        ({"name": "x", "price": "1", "stock": "-1"}, "库存应为"),
        ({"name": "x", "price": "1", "stock": "1.5"}, "库存应为"),
        ({"name": "x", "price": "1", "stock": "999999999"}, "库存应为"),
        ({"name": "规格" * 40, "price": "1", "stock": "1"}, "规格名称最多 64 字"),
    ):
        response = ops.post(path, form)
        assert response.status_code == 422 and message in response.text, form
    assert skus(app) == []
    assert ops.post("/console/products/999999/skus", {"name": "x", "price": "1", "stock": "1"}).status_code == 404


def test_sku_edits_move_stock_by_the_difference_the_form_made(app: Flask, console: Callable[..., Console]) -> None:
    ops = console("operations")
    product = created(ops, app)
    ops.post(f"/console/products/{product.id}/skus", {"name": "罐", "price": "10", "stock": "10"})
    sku = skus(app)[0]
    # Two units are reserved by an order after the form was shown with 10 in stock.
    with app.app_context():
        db.session().execute(update(Sku).where(Sku.id == sku.id).values(stock=Sku.stock - 2))
        db.commit()
    response = ops.post(f"/console/skus/{sku.id}", {"name": "罐装", "price": "12.50", "stock": "15", "stock_seen": "10", "active": "1"})
    assert response.status_code == 303
    sku = skus(app)[0]
    assert (sku.name, sku.price_fen, sku.stock, sku.active) == ("罐装", 1_250, 13, True)
    # Taking away more than is left is refused; nothing changes.
    refused = ops.post(f"/console/skus/{sku.id}", {"name": "罐装", "price": "12.50", "stock": "0", "stock_seen": "20", "active": "1"})
    assert refused.status_code == 409 and "库存不能减到 0 以下" in refused.text
    assert skus(app)[0].stock == 13
    for form in ({"price": "x", "stock": "1", "stock_seen": "13"}, {"price": "1", "stock": "-3", "stock_seen": "13"}, {"price": "1", "stock": "1", "stock_seen": "abc"}):
        assert ops.post(f"/console/skus/{sku.id}", {"name": "罐装", "active": "1", **form}).status_code == 422
    assert skus(app)[0].price_fen == 1_250
    # Switched off (and the stock kept).
    assert ops.post(f"/console/skus/{sku.id}", {"name": "罐装", "price": "12.50", "stock": "13", "stock_seen": "13", "active": "0"}).status_code == 303
    assert (skus(app)[0].active, skus(app)[0].stock) == (False, 13)
    assert ops.post("/console/skus/999999", {"name": "x", "price": "1", "stock": "1", "stock_seen": "1"}).status_code == 404


def test_pre_sale_needs_a_ship_date_and_products_go_on_and_off_sale(app: Flask, console: Callable[..., Console]) -> None:
    owner = console("owner")
    refused = owner.post("/console/products/new", {**PRODUCT, "presale": "1"})
    assert refused.status_code == 422 and "预售商品需要填写发货日期" in refused.text
    assert owner.post("/console/products/new", {**PRODUCT, "presale": "1", "ship_date": "2026-02-30"}).status_code == 422
    for bad in ({"title": " "}, {"title": "茶" * 200}, {"sort": "abc"}, {"sort": "99999999"}, {"cover_url": "x" * 600}, {"status": "deleted"}):
        response = owner.post("/console/products/new", {**PRODUCT, **bad})
        assert response.status_code == 422, bad
    assert products(app) == []
    product = created(owner, app, presale="1", ship_date="2026-03-15")
    # The ship date is midnight China time of the day chosen.
    assert product.presale and product.ship_date == datetime(2026, 3, 14, 16, tzinfo=timezone.utc)
    page = owner.get(f"/console/products/{product.id}").text
    assert 'value="2026-03-15"' in page
    # Edited: the pre-sale ends, its date cleared.
    edit = {**PRODUCT, "title": "明前龙井（新茶）", "sort": "9"}
    assert owner.post(f"/console/products/{product.id}", edit).status_code == 303
    product = products(app)[0]
    assert (product.title, product.sort, product.presale, product.ship_date) == ("明前龙井（新茶）", 9, False, None)
    assert owner.post(f"/console/products/{product.id}", {**edit, "title": ""}).status_code == 422
    # Taken off sale and back.
    assert owner.post(f"/console/products/{product.id}", {"action": "status", "status": "off_sale"}).status_code == 303
    assert products(app)[0].status == ProductStatus.off_sale
    assert "已下架" in owner.get("/console/products").text
    assert owner.post(f"/console/products/{product.id}", {"action": "status", "status": "gone"}).status_code == 422
    assert owner.post(f"/console/products/{product.id}", {"action": "status", "status": "on_sale"}).status_code == 303
    assert products(app)[0].status == ProductStatus.on_sale
    assert owner.get("/console/products/999999").status_code == 404
    assert owner.get("/console/products?page=abc").status_code == 200
    assert audit(app).count("product.update") == 3


def test_finance_neither_sees_nor_changes_the_catalog(app: Flask, console: Callable[..., Console]) -> None:
    product = created(console("operations"), app)
    finance = console("finance")
    with app.app_context():
        before = db.session().scalar(select(func.count()).select_from(AuditEntry))
    for path, form in (
        ("/console/products/new", PRODUCT),
        (f"/console/products/{product.id}", {**PRODUCT, "title": "改名"}),
        (f"/console/products/{product.id}", {"action": "status", "status": "off_sale"}),
        (f"/console/products/{product.id}/skus", {"name": "x", "price": "1", "stock": "1"}),
    ):
        response = finance.post(path, form)
        assert response.status_code == 403 and "无权访问" in response.text, path
    assert finance.get("/console/products").status_code == 403
    assert [(p.title, p.status) for p in products(app)] == [("明前龙井", ProductStatus.on_sale)]
    assert skus(app) == []
    with app.app_context():
        assert db.session().scalar(select(func.count()).select_from(AuditEntry)) == before
