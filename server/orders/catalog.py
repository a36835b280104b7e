"""The catalog: products and their SKUs, managed by operations, browsed by members."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.accounts.services import record_audit
from server.db import paginate, rowcount
from server.errors import ValidationError
from server.orders.errors import InsufficientStockError, ProductNotFoundError
from server.orders.models import Product, ProductStatus, Sku


def _skus(sess: Session, product_ids: list[int], active_only: bool) -> dict[int, list[Sku]]:
    stmt = select(Sku).where(Sku.product_id.in_(product_ids)).order_by(Sku.id)
    if active_only:
        stmt = stmt.where(Sku.active.is_(True))
    found: dict[int, list[Sku]] = {pid: [] for pid in product_ids}
    for sku in sess.scalars(stmt):
        found[sku.product_id].append(sku)
    return found


def list_products(sess: Session, *, on_sale_only: bool, offset: int, limit: int) -> tuple[list[tuple[Product, list[Sku]]], int]:
    """A page of products with their SKUs, in the merchant's order."""
    stmt = select(Product)
    if on_sale_only:
        stmt = stmt.where(Product.status == ProductStatus.on_sale)
    products, total = paginate(sess, stmt, offset=offset, limit=limit, order_by=(Product.sort.desc(), Product.id.desc()))
    skus = _skus(sess, [p.id for p in products], on_sale_only)
    return [(p, skus[p.id]) for p in products], total


def get_product(sess: Session, product_id: int, *, on_sale_only: bool) -> tuple[Product, list[Sku]]:
    product = sess.get(Product, product_id)
    if product is None or (on_sale_only and product.status != ProductStatus.on_sale):
        raise ProductNotFoundError()
    return product, _skus(sess, [product.id], on_sale_only)[product.id]


def _check_presale(values: dict[str, Any]) -> None:
    if values.get("presale") and not values.get("ship_date"):
        raise ValidationError(data={"errors": [{"field": "ship_date", "error": "a pre-sale item needs a ship date"}]})


def _aware(values: dict[str, Any]) -> dict[str, Any]:
    if "status" in values and values["status"] is not None:
        values["status"] = ProductStatus(values["status"])
    return values


def create_product(sess: Session, *, staff_id: int | None = None, **values: Any) -> Product:
    """A new product; audited when ``staff_id`` (the staff member who made it) is given."""
    values = _aware(values)
    _check_presale(values)
    product = Product(**values)
    sess.add(product)
    sess.flush()
    if staff_id is not None:
        record_audit(sess, staff_id, "product.create", f"product:{product.id}", {"title": product.title})
    return product


def update_product(sess: Session, product_id: int, changes: dict[str, Any], *, staff_id: int | None = None) -> tuple[Product, list[Sku]]:
    """Change a product; audited when ``staff_id`` is given."""
    product, _ = get_product(sess, product_id, on_sale_only=False)
    changes = _aware(changes)
    _check_presale({"presale": changes.get("presale", product.presale), "ship_date": changes.get("ship_date", product.ship_date)})
    for key, value in changes.items():
        setattr(product, key, value)
    sess.flush()
    if staff_id is not None:
        record_audit(sess, staff_id, "product.update", f"product:{product.id}", {k: str(v) for k, v in changes.items()})
    return product, _skus(sess, [product.id], False)[product.id]


def add_sku(sess: Session, product_id: int, *, name: str, price_fen: int, stock: int, staff_id: int | None = None) -> Sku:
    """A new SKU of a product; audited when ``staff_id`` is given."""
    get_product(sess, product_id, on_sale_only=False)
    sku = Sku(product_id=product_id, name=name, price_fen=price_fen, stock=stock)
    sess.add(sku)
    sess.flush()
    if staff_id is not None:
        record_audit(sess, staff_id, "sku.create", f"sku:{sku.id}", {"name": name, "price_fen": price_fen, "stock": stock})
    return sku


def update_sku(
    sess: Session,
    sku_id: int,
    *,
    name: str | None = None,
    price_fen: int | None = None,
    stock_delta: int | None = None,
    active: bool | None = None,
    staff_id: int | None = None,
) -> Sku:
    """Change a SKU; stock moves by a delta in one conditional UPDATE, so it races safely with orders.
    Audited when ``staff_id`` is given."""
    sku = sess.get(Sku, sku_id)
    if sku is None:
        raise ProductNotFoundError("no such SKU")
    if stock_delta:
        result = sess.execute(update(Sku).where(Sku.id == sku_id, Sku.stock + stock_delta >= 0).values(stock=Sku.stock + stock_delta))
        if rowcount(result) != 1:
            raise InsufficientStockError("stock cannot go below zero")
        sess.refresh(sku)
    for key, value in (("name", name), ("price_fen", price_fen), ("active", active)):
        if value is not None:
            setattr(sku, key, value)
    sess.flush()
    if staff_id is not None:
        given = {"name": name, "price_fen": price_fen, "stock_delta": stock_delta, "active": active}
        record_audit(sess, staff_id, "sku.update", f"sku:{sku.id}", {k: v for k, v in given.items() if v is not None})
    return sku
