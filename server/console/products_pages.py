"""The console's catalog pages: products, their SKUs, stock and pre-sale, through ``server.orders.catalog``.

Forms are validated with the admin API's own bodies (``ProductBody``, ``SkuBody`` …) and saved by the
catalog services the admin routes call (audited). Prices are typed in yuan and stored in fen by
integer arithmetic (``labels.fen``); stock moves by the difference from what the form showed, in the
catalog's conditional UPDATE, so units that orders reserved meanwhile are never given back.
"""
from __future__ import annotations

import re
from datetime import date
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from pydantic import BaseModel

from server import db
from server.api import validate
from server.console.labels import fen
from server.console.queries import day_start
from server.console.routes import PAGE_SIZE, bp, field_errors, form_text, int_arg, pages
from server.console.session import console_view, current_staff
from server.errors import AppError, ValidationError
from server.orders import catalog
from server.orders.errors import InsufficientStockError, ProductNotFoundError
from server.orders.models import Sku
from server.orders.routes import ProductBody, ProductPatchBody, SkuBody, SkuPatchBody

#: Each field's rule in Chinese, for the messages of the API's body validation.
FIELD_RULES = {
    "title": "请填写商品名称（最多 128 字）。",
    "subtitle": "副标题最多 255 字。",
    "description": "描述最多 20,000 字。",
    "cover_url": "封面地址最多 512 个字符。",
    "status": "请选择在售或下架。",
    "presale": "请选择是否预售。",
    "ship_date": "预售商品需要填写发货日期。",
    "sort": "排序应为 -1000000 到 1000000 之间的整数。",
    "name": "规格名称最多 64 字。",
    "price_fen": "价格应为大于 0 的金额（元），最多两位小数。",
    "stock": "库存应为 0 到 10,000,000 之间的整数。",
    "stock_delta": "库存一次最多增减 10,000,000。",
    "active": "请选择是否启用。",
}
INTEGER = re.compile(r"^-?[0-9]{1,9}$")


def _errors(error: AppError, prefix: str = "") -> dict[str, str]:
    found = field_errors(error)
    return {prefix + field: FIELD_RULES.get(field, message) for field, message in found.items()} or {prefix + "form": error.message}


def _checked(model: type[BaseModel], payload: dict[str, Any]) -> Any:
    return validate(model, payload)


def _integer(name: str, problems: dict[str, str], key: str, default: int | None = None) -> int | None:
    text = form_text(name, 32)
    if not text and default is not None:
        return default
    if not INTEGER.match(text):
        problems[key] = FIELD_RULES.get(name, "请输入整数。")
        return None
    return int(text)


def _product_form() -> tuple[dict[str, Any], dict[str, str]]:
    """The product form as the admin API's body, and the problems found before it is validated."""
    problems: dict[str, str] = {}
    ship_text = form_text("ship_date", 32)
    ship_date = None
    if ship_text:
        try:
            ship_date = day_start(date.fromisoformat(ship_text))
        except ValueError:
            problems["ship_date"] = "发货日期格式应为 YYYY-MM-DD。"
    status = request.form.get("status", "on_sale")
    values = {
        "title": form_text("title", 200),
        "subtitle": form_text("subtitle", 300),
        "description": request.form.get("description", "")[:20_001].strip(),
        "cover_url": form_text("cover_url", 600),
        "status": status if status in ("on_sale", "off_sale") else "?",
        "presale": request.form.get("presale") == "1",
        "ship_date": ship_date,
        "sort": _integer("sort", problems, "sort", default=0),
    }
    return values, problems


# -- the product list and a new product ---------------------------------------------------------


@bp.get("/products")
@console_view("products")
def products() -> Any:
    """Every product (on sale or not) with its SKUs, in the merchant's order."""
    page = int_arg("page", 1)
    rows, total = catalog.list_products(db.session(), on_sale_only=False, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    return render_template("console/products.html", rows=rows, pager=pages(total))


@bp.route("/products/new", methods=["GET", "POST"])
@console_view("products.edit")
def products_new() -> Any:
    if request.method == "GET":
        return render_template("console/product_form.html", product=None, errors={}, form={})
    values, problems = _product_form()
    if problems:
        return render_template("console/product_form.html", product=None, errors=problems, form=request.form), 422
    try:
        body = _checked(ProductBody, values)
        product = catalog.create_product(db.session(), staff_id=current_staff().id, **body.model_dump())
    except ValidationError as error:
        return render_template("console/product_form.html", product=None, errors=_errors(error), form=request.form), error.http_status
    flash(f"已创建商品「{product.title}」，请添加规格（SKU）和库存。", "success")
    return redirect(url_for("console.products_view", product_id=product.id), 303)


# -- one product ----------------------------------------------------------------------------------


@bp.get("/products/<int:product_id>")
@console_view("products")
def products_view(product_id: int, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    product, skus = catalog.get_product(db.session(), product_id, on_sale_only=False)
    return render_template("console/product.html", product=product, skus=skus, errors=errors or {}, form=request.form if errors else {}), status


@bp.post("/products/<int:product_id>")
@console_view("products.edit")
def products_update(product_id: int) -> Any:
    """Save the product form, or (``status`` alone) put it on sale or take it off."""
    catalog.get_product(db.session(), product_id, on_sale_only=False)
    if request.form.get("action") == "status":
        status = request.form.get("status", "")
        if status not in ("on_sale", "off_sale"):
            return products_view(product_id, errors={"status": FIELD_RULES["status"]}, status=422)
        catalog.update_product(db.session(), product_id, {"status": status}, staff_id=current_staff().id)
        flash("商品已上架。" if status == "on_sale" else "商品已下架，会员不再能看到和购买。", "success")
        return redirect(url_for("console.products_view", product_id=product_id), 303)
    values, problems = _product_form()
    if problems:
        return products_view(product_id, errors=problems, status=422)
    try:
        body = _checked(ProductPatchBody, values)
        changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None or k == "ship_date"}
        catalog.update_product(db.session(), product_id, changes, staff_id=current_staff().id)
    except ValidationError as error:
        return products_view(product_id, errors=_errors(error), status=error.http_status)
    flash("商品已保存。", "success")
    return redirect(url_for("console.products_view", product_id=product_id), 303)


@bp.post("/products/<int:product_id>/skus")
@console_view("products.edit")
def products_sku_add(product_id: int) -> Any:
    """A new SKU: its name, price in yuan and starting stock."""
    catalog.get_product(db.session(), product_id, on_sale_only=False)
    problems: dict[str, str] = {}
    price = fen(form_text("price", 32))
    if price is None:
        problems["new-price_fen"] = FIELD_RULES["price_fen"]
    stock = _integer("stock", problems, "new-stock", default=0)
    if problems:
        return products_view(product_id, errors=problems, status=422)
    try:
        body = _checked(SkuBody, {"name": form_text("name", 100), "price_fen": price, "stock": stock})
        sku = catalog.add_sku(db.session(), product_id, name=body.name, price_fen=body.price_fen, stock=body.stock, staff_id=current_staff().id)
    except ValidationError as error:
        return products_view(product_id, errors=_errors(error, "new-"), status=error.http_status)
    flash(f"已添加规格「{sku.name or '默认'}」。", "success")
    return redirect(url_for("console.products_view", product_id=product_id) + f"#sku-{sku.id}", 303)


@bp.post("/skus/<int:sku_id>")
@console_view("products.edit")
def products_sku_update(sku_id: int) -> Any:
    """Change a SKU's name, price, stock (by the difference from the stock the form showed) or whether it is sold."""
    sku = db.session().get(Sku, sku_id)
    if sku is None:
        raise ProductNotFoundError("no such SKU")
    product_id, key = sku.product_id, f"sku-{sku_id}-"
    problems: dict[str, str] = {}
    price = fen(form_text("price", 32))
    if price is None:
        problems[key + "price_fen"] = FIELD_RULES["price_fen"]
    seen = _integer("stock_seen", problems, key + "stock")
    stock = _integer("stock", problems, key + "stock")
    if problems or seen is None or stock is None:
        return products_view(product_id, errors=problems, status=422)
    if stock < 0:
        return products_view(product_id, errors={key + "stock": FIELD_RULES["stock"]}, status=422)
    payload: dict[str, Any] = {"name": form_text("name", 100), "price_fen": price, "active": request.form.get("active") == "1"}
    if stock != seen:
        payload["stock_delta"] = stock - seen
    try:
        body = _checked(SkuPatchBody, payload)
        catalog.update_sku(db.session(), sku_id, staff_id=current_staff().id, **body.model_dump(exclude_none=True))
    except ValidationError as error:
        return products_view(product_id, errors=_errors(error, key), status=error.http_status)
    except InsufficientStockError:
        return products_view(product_id, errors={key + "stock": "期间已有订单占用库存，库存不能减到 0 以下；请刷新后重试。"}, status=409)
    flash("规格已保存。", "success")
    return redirect(url_for("console.products_view", product_id=product_id) + f"#sku-{sku_id}", 303)
