"""Catalog and orders for members (/api/v1) and staff (/admin/api/v1)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint
from pydantic import (
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import select

from server import db, security
from server.accounts.auth import (
    current_member,
    current_staff,
    member_if_signed_in,
    member_required,
    staff_required,
)
from server.accounts.models import Member, StaffRole
from server.api import (
    Body,
    Instant,
    LongText,
    NonBlank,
    Page,
    client_address,
    iso,
    parse_body,
    parse_query,
)
from server.errors import envelope
from server.orders import catalog, payments, services
from server.orders import queries as order_queries
from server.orders.errors import OrderNotFoundError
from server.orders.models import (
    Order,
    OrderEvent,
    OrderItem,
    OrderKind,
    OrderStatus,
    Product,
    Refund,
    RefundStatus,
    Sku,
)
from server.wechat import wechat_pay
from server.wechat.formats import SCENE_RE

bp = Blueprint("orders", __name__, url_prefix="/api/v1")
admin_bp = Blueprint("orders_admin", __name__, url_prefix="/admin/api/v1")

Text64 = Annotated[str, StringConstraints(max_length=64)]
MAX_FEN = 100_000_000_00  # one hundred million yuan: far above any real order, far below overflow


class LineBody(Body):
    sku_id: int = Field(ge=1)
    quantity: int = Field(ge=1, le=999)


class AddressBody(Body):
    name: Annotated[NonBlank, StringConstraints(max_length=32)]
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9]{5,20}$")]
    province: Text64 = ""
    city: Text64 = ""
    district: Text64 = ""
    detail: Annotated[NonBlank, StringConstraints(max_length=255)]


class OrderBody(Body):
    items: list[LineBody] = Field(min_length=1, max_length=50)
    address: AddressBody | None = None
    remark: Annotated[str, StringConstraints(max_length=255)] = ""
    scene: Annotated[str, StringConstraints(pattern=SCENE_RE.pattern)] | None = None


class OrderListQuery(Page):
    status: OrderStatus | None = None


class AdminOrderListQuery(OrderListQuery):
    member_id: int | None = None
    inviter_id: int | None = None
    kind: OrderKind | None = None


class RefundBody(Body):
    #: Omitted: everything still refundable.
    amount_fen: int | None = Field(None, ge=1, le=MAX_FEN)
    reason: Annotated[NonBlank, StringConstraints(max_length=255)]


class ShipBody(Body):
    carrier: Annotated[NonBlank, StringConstraints(max_length=32)]
    tracking_no: Annotated[NonBlank, StringConstraints(max_length=64)]


class RefundListQuery(Page):
    status: RefundStatus | None = None
    order_id: int | None = Field(None, ge=1, le=2**63 - 1)


class SettleOfflineBody(Body):
    #: What was done instead, for the timeline and the audit log (e.g. "转账至买家银行卡，流水号 …").
    note: Annotated[NonBlank, StringConstraints(max_length=255)]


class ResendAbnormalBody(Body):
    #: Where WeChat Pay pays the money it holds: the buyer's debit card, or the merchant's own bank account.
    target: Literal["user_bank_card", "merchant_bank_card"]
    #: WeChat Pay's bank code (e.g. ICBC_DEBIT); the buyer's card only.
    bank_type: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,15}$")] | None = None
    bank_account: Annotated[str, StringConstraints(pattern=r"^[0-9]{12,24}$")] | None = None
    real_name: Annotated[NonBlank, StringConstraints(max_length=64)] | None = None

    @model_validator(mode="after")
    def _card_needs_its_owner(self) -> "ResendAbnormalBody":
        card = (self.bank_type, self.bank_account, self.real_name)
        if self.target == "user_bank_card" and None in card:
            raise PydanticCustomError("card_incomplete", "bank_type, bank_account and real_name are required for the buyer's card")
        if self.target == "merchant_bank_card" and card != (None, None, None):
            raise PydanticCustomError("card_unexpected", "the merchant's own account takes no card details")
        return self


class RejectBody(Body):
    reason: Annotated[NonBlank, StringConstraints(max_length=255)]


# These bodies are lax only so ship_date may arrive as an ISO string; every other field is strict.
class ProductBody(Body):
    title: Annotated[NonBlank, StringConstraints(max_length=128)]
    subtitle: Annotated[StrictStr, StringConstraints(max_length=255)] = ""
    description: LongText = ""
    cover_url: Annotated[StrictStr, StringConstraints(max_length=512)] = ""
    status: Literal["on_sale", "off_sale"] = "on_sale"
    presale: StrictBool = False
    ship_date: Instant | None = None
    sort: StrictInt = Field(0, ge=-1_000_000, le=1_000_000)

    model_config = Body.model_config | {"strict": False}


class ProductPatchBody(Body):
    title: Annotated[NonBlank, StringConstraints(max_length=128)] | None = None
    subtitle: Annotated[StrictStr, StringConstraints(max_length=255)] | None = None
    description: LongText | None = None
    cover_url: Annotated[StrictStr, StringConstraints(max_length=512)] | None = None
    status: Literal["on_sale", "off_sale"] | None = None
    presale: StrictBool | None = None
    ship_date: Instant | None = None
    sort: StrictInt | None = Field(None, ge=-1_000_000, le=1_000_000)

    model_config = Body.model_config | {"strict": False}


class SkuBody(Body):
    name: Text64 = ""
    price_fen: int = Field(ge=1, le=MAX_FEN)
    stock: int = Field(0, ge=0, le=10_000_000)


class SkuPatchBody(Body):
    name: Text64 | None = None
    price_fen: int | None = Field(None, ge=1, le=MAX_FEN)
    #: Added to (or, negative, taken from) the stock; never below zero.
    stock_delta: int | None = Field(None, ge=-10_000_000, le=10_000_000)
    active: bool | None = None


# -- serializers ---------------------------------------------------------------------



def serialize_sku(sku: Sku, discount_bp: int = 0) -> dict[str, Any]:
    """A SKU; ``pay_price_fen`` is what the caller would pay per unit after their discount."""
    return {
        "id": sku.id,
        "name": sku.name,
        "price_fen": sku.price_fen,
        "pay_price_fen": services.discounted_price(sku.price_fen, discount_bp),
        "stock": sku.stock,
        "active": sku.active,
    }


def serialize_product(product: Product, skus: list[Sku], discount_bp: int = 0) -> dict[str, Any]:
    return {
        "id": product.id,
        "title": product.title,
        "subtitle": product.subtitle,
        "description": product.description,
        "cover_url": product.cover_url,
        "status": product.status.value,
        "presale": product.presale,
        "ship_date": iso(product.ship_date),
        "sort": product.sort,
        "discount_bp": discount_bp,
        "skus": [serialize_sku(s, discount_bp) for s in skus],
    }


def serialize_order(order: Order, *, detail: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": order.id,
        "out_trade_no": order.out_trade_no,
        "kind": order.kind.value,
        "status": order.status.value,
        "title": order.title,
        "total_fee": order.total_fee,
        "discount_bp": order.discount_bp,
        "discount_fen": order.discount_fen,
        "paid_fee": order.paid_fee,
        "refunded_fee": order.refunded_fee,
        "repeat_business": order.repeat_business,
        "created_at": order.created_at.isoformat(),
        "expires_at": iso(order.expires_at),
        "paid_at": iso(order.paid_at),
        "shipped_at": iso(order.shipped_at),
        "received_at": iso(order.received_at),
        "completed_at": iso(order.completed_at),
        "closed_at": iso(order.closed_at),
    }
    if detail:
        sess = db.session()
        items = sess.scalars(select(OrderItem).where(OrderItem.order_id == order.id).order_by(OrderItem.id)).all()
        events = sess.scalars(select(OrderEvent).where(OrderEvent.order_id == order.id).order_by(OrderEvent.id)).all()
        refunds = sess.scalars(select(Refund).where(Refund.order_id == order.id).order_by(Refund.id)).all()
        data.update(
            address=order.address,
            remark=order.remark,
            carrier=order.carrier,
            tracking_no=order.tracking_no,
            items=[
                {"sku_id": i.sku_id, "product_id": i.product_id, "title": i.title, "sku_name": i.sku_name, "price_fen": i.price_fen, "list_price_fen": i.list_price_fen, "quantity": i.quantity}
                for i in items
            ],
            refunds=[serialize_refund(r) for r in refunds],
            timeline=[
                {"event": e.event, "time": e.created_at.isoformat(), "actor": e.actor, "from": e.from_status, "to": e.to_status, "detail": e.detail}
                for e in events
            ],
        )
    return data


def serialize_refund(refund: Refund) -> dict[str, Any]:
    return {
        "id": refund.id,
        "order_id": refund.order_id,
        "out_refund_no": refund.out_refund_no,
        "amount_fen": refund.amount_fen,
        "reason": refund.reason,
        "status": refund.status.value,
        "failure_reason": refund.failure_reason,
        "attempts": refund.attempts,
        "next_attempt_at": iso(refund.next_attempt_at),
        "created_at": refund.created_at.isoformat(),
        "finished_at": iso(refund.finished_at),
    }


def _page(stmt: Any, query: Page, order_by: Any = Order.id.desc()) -> tuple[list[Any], int]:
    return db.paginate(db.session(), stmt, offset=query.offset, limit=query.page_size, order_by=(order_by,))


# -- catalog ---------------------------------------------------------------------------


def _viewer_discount() -> int:
    """The signed-in caller's own-purchase discount; 0 without a (valid) token, since the catalog is public."""
    sess = db.session()
    member = member_if_signed_in()
    return services.buyer_discount_bp(sess, member.id if member else None)


@bp.get("/products")
def list_products() -> Any:
    """Products on sale, with their SKUs; no sign-in needed, a distributor signed in sees their prices."""
    query = parse_query(Page)
    products, total = catalog.list_products(db.session(), on_sale_only=True, offset=query.offset, limit=query.page_size)
    discount = _viewer_discount()
    return envelope({"items": [serialize_product(p, skus, discount) for p, skus in products], "total": total, "page": query.page})


@bp.get("/products/<int:product_id>")
def get_product(product_id: int) -> Any:
    product, skus = catalog.get_product(db.session(), product_id, on_sale_only=True)
    return envelope(serialize_product(product, skus, _viewer_discount()))


# -- member orders ------------------------------------------------------------------------


@bp.post("/orders")
@member_required
def create_order() -> Any:
    body = parse_body(OrderBody)
    order = services.place_order(
        db.session(),
        current_member(),
        [services.LineRequest(line.sku_id, line.quantity) for line in body.items],
        address=body.address.model_dump() if body.address else None,
        remark=body.remark,
        scene=body.scene,
    )
    return envelope(serialize_order(order, detail=True), status=201)


@bp.get("/orders")
@member_required
def list_orders() -> Any:
    query = parse_query(OrderListQuery)
    stmt = select(Order).where(Order.member_id == current_member().id)
    if query.status:
        stmt = stmt.where(Order.status == query.status)
    rows, total = _page(stmt, query)
    return envelope({"items": [serialize_order(o) for o in rows], "total": total, "page": query.page})


@bp.get("/orders/<int:order_id>")
@member_required
def get_order(order_id: int) -> Any:
    return envelope(serialize_order(services.get_member_order(db.session(), current_member(), order_id), detail=True))


@bp.post("/orders/<int:order_id>/cancel")
@member_required
def cancel_order(order_id: int) -> Any:
    sess = db.session()
    order = services.get_member_order(sess, current_member(), order_id)
    services.cancel_unpaid(sess, order, actor=f"member:{current_member().id}")
    return envelope(serialize_order(order, detail=True))


@bp.post("/orders/<int:order_id>/pay")
@member_required
def pay_order(order_id: int) -> Any:
    """The parameters for wx.requestPayment, from a real prepay. Commits before calling WeChat (see ``prepay_order``)."""
    sess = db.session()
    member = current_member()
    order = services.get_member_order(sess, member, order_id)
    params = payments.prepay_order(sess, wechat_pay(), order, member, client_address())
    return envelope(params)


@bp.post("/orders/<int:order_id>/receive")
@member_required
def receive_order(order_id: int) -> Any:
    sess = db.session()
    order = services.get_member_order(sess, current_member(), order_id)
    services.receive(sess, order, actor=f"member:{current_member().id}")
    return envelope(serialize_order(order, detail=True))


@bp.post("/orders/<int:order_id>/refunds")
@member_required
def member_refund(order_id: int) -> Any:
    """An after-sales request; staff approve it before the money moves."""
    body = parse_body(RefundBody)
    sess = db.session()
    order = services.get_member_order(sess, current_member(), order_id)
    refund = services.request_member_refund(sess, order, body.amount_fen, body.reason, actor=f"member:{current_member().id}")
    return envelope(serialize_refund(refund), status=201)


@bp.get("/referral/orders")
@member_required
def referral_orders() -> Any:
    """Orders the member brought, as level 1 or level 2; buyers are masked."""
    query = parse_query(OrderListQuery)
    me = current_member().id
    rows, total, buyers = order_queries.referral_orders(db.session(), me, query.status, query.offset, query.page_size)
    items = []
    for order in rows:
        data = serialize_order(order)
        buyer = buyers.get(order.member_id)
        data["buyer"] = {"nickname": security.mask(buyer.nickname) if buyer else "*"}
        data["level"] = 1 if order.inviter_id == me else 2
        items.append(data)
    return envelope({"items": items, "total": total, "page": query.page})


# -- console ------------------------------------------------------------------------------


@admin_bp.get("/products")
@staff_required(StaffRole.operations)
def admin_list_products() -> Any:
    query = parse_query(Page)
    products, total = catalog.list_products(db.session(), on_sale_only=False, offset=query.offset, limit=query.page_size)
    return envelope({"items": [serialize_product(p, skus) for p, skus in products], "total": total, "page": query.page})


@admin_bp.post("/products")
@staff_required(StaffRole.operations)
def admin_create_product() -> Any:
    body = parse_body(ProductBody)
    sess = db.session()
    product = catalog.create_product(sess, staff_id=current_staff().id, **body.model_dump())
    return envelope(serialize_product(product, []), status=201)


@admin_bp.get("/products/<int:product_id>")
@staff_required(StaffRole.operations)
def admin_get_product(product_id: int) -> Any:
    product, skus = catalog.get_product(db.session(), product_id, on_sale_only=False)
    return envelope(serialize_product(product, skus))


@admin_bp.patch("/products/<int:product_id>")
@staff_required(StaffRole.operations)
def admin_patch_product(product_id: int) -> Any:
    body = parse_body(ProductPatchBody)
    sess = db.session()
    # null clears only what may be empty (the ship date); for anything else it means "leave it".
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None or k == "ship_date"}
    product, skus = catalog.update_product(sess, product_id, changes, staff_id=current_staff().id)
    return envelope(serialize_product(product, skus))


@admin_bp.post("/products/<int:product_id>/skus")
@staff_required(StaffRole.operations)
def admin_create_sku(product_id: int) -> Any:
    body = parse_body(SkuBody)
    sess = db.session()
    sku = catalog.add_sku(sess, product_id, name=body.name, price_fen=body.price_fen, stock=body.stock, staff_id=current_staff().id)
    return envelope(serialize_sku(sku), status=201)


@admin_bp.patch("/skus/<int:sku_id>")
@staff_required(StaffRole.operations)
def admin_patch_sku(sku_id: int) -> Any:
    body = parse_body(SkuPatchBody)
    sess = db.session()
    sku = catalog.update_sku(sess, sku_id, staff_id=current_staff().id, **body.model_dump(exclude_none=True))
    return envelope(serialize_sku(sku))


@admin_bp.get("/orders")
@staff_required(StaffRole.operations, StaffRole.finance)
def admin_list_orders() -> Any:
    query = parse_query(AdminOrderListQuery)
    stmt = select(Order)
    for column, value in ((Order.status, query.status), (Order.member_id, query.member_id), (Order.inviter_id, query.inviter_id), (Order.kind, query.kind)):
        if value is not None:
            stmt = stmt.where(column == value)
    rows, total = _page(stmt, query)
    items = [serialize_order(o) | {"member_id": o.member_id, "inviter_id": o.inviter_id, "upline_id": o.upline_id} for o in rows]
    return envelope({"items": items, "total": total, "page": query.page})


def _order(order_id: int) -> Order:
    order = db.session().get(Order, order_id)
    if order is None:
        raise OrderNotFoundError()
    return order


@admin_bp.get("/orders/<int:order_id>")
@staff_required(StaffRole.operations, StaffRole.finance)
def admin_get_order(order_id: int) -> Any:
    order = _order(order_id)
    return envelope(serialize_order(order, detail=True) | {"member_id": order.member_id, "inviter_id": order.inviter_id, "upline_id": order.upline_id})


@admin_bp.post("/orders/<int:order_id>/ship")
@staff_required(StaffRole.operations)
def admin_ship(order_id: int) -> Any:
    body = parse_body(ShipBody)
    order = _order(order_id)
    services.ship(db.session(), order, carrier=body.carrier, tracking_no=body.tracking_no, actor=f"staff:{current_staff().id}")
    return envelope(serialize_order(order, detail=True))


@admin_bp.post("/orders/<int:order_id>/refunds")
@staff_required(StaffRole.operations, StaffRole.finance)
def admin_refund(order_id: int) -> Any:
    """Staff start a refund; it goes to WeChat Pay at once."""
    body = parse_body(RefundBody)
    sess = db.session()
    order = _order(order_id)
    staff_id = current_staff().id
    refund = services.request_refund(sess, order, body.amount_fen, body.reason, actor=f"staff:{staff_id}", approved=True, staff_id=staff_id)
    payments.submit_refund_after_commit(refund.id)
    return envelope(serialize_refund(refund), status=201)


@admin_bp.post("/refunds/<int:refund_id>/approve")
@staff_required(StaffRole.operations, StaffRole.finance)
def admin_approve_refund(refund_id: int) -> Any:
    sess = db.session()
    staff_id = current_staff().id
    refund = services.approve_refund(sess, refund_id, actor=f"staff:{staff_id}", staff_id=staff_id)
    payments.submit_refund_after_commit(refund.id)
    return envelope(serialize_refund(refund))


@admin_bp.post("/refunds/<int:refund_id>/reject")
@staff_required(StaffRole.operations, StaffRole.finance)
def admin_reject_refund(refund_id: int) -> Any:
    body = parse_body(RejectBody)
    sess = db.session()
    staff_id = current_staff().id
    refund = services.reject_refund(sess, refund_id, reason=body.reason, actor=f"staff:{staff_id}", staff_id=staff_id)
    return envelope(serialize_refund(refund))


@admin_bp.get("/refunds")
@staff_required(StaffRole.operations, StaffRole.finance)
def admin_list_refunds() -> Any:
    """Refunds, newest first; ``status=failed`` and ``status=abnormal`` are the queues staff work through."""
    query = parse_query(RefundListQuery)
    stmt = select(Refund)
    if query.status is not None:
        stmt = stmt.where(Refund.status == query.status)
    if query.order_id is not None:
        stmt = stmt.where(Refund.order_id == query.order_id)
    rows, total = _page(stmt, query, Refund.id.desc())
    return envelope({"items": [serialize_refund(r) for r in rows], "total": total, "page": query.page})


@admin_bp.post("/refunds/<int:refund_id>/settle-offline")
@staff_required(StaffRole.finance)
def admin_settle_refund_offline(refund_id: int) -> Any:
    """Finance paid the buyer of an abnormal refund another way: the refund counts as paid out."""
    body = parse_body(SettleOfflineBody)
    sess = db.session()
    staff_id = current_staff().id
    refund = services.settle_abnormal_refund_offline(sess, refund_id, note=body.note, actor=f"staff:{staff_id}", staff_id=staff_id)
    return envelope(serialize_refund(refund))


@admin_bp.post("/refunds/<int:refund_id>/resend")
@staff_required(StaffRole.finance)
def admin_resend_abnormal_refund(refund_id: int) -> Any:
    """Finance asks WeChat Pay to pay an abnormal refund into another account (v3 only); it is
    ``processing`` again and its notification ends it. Commits early: nothing is held while WeChat answers."""
    body = parse_body(ResendAbnormalBody)
    staff_id = current_staff().id
    refund = payments.resend_abnormal_refund(
        refund_id,
        target=body.target,
        bank_type=body.bank_type,
        bank_account=body.bank_account,
        real_name=body.real_name,
        actor=f"staff:{staff_id}",
        staff_id=staff_id,
    )
    return envelope(serialize_refund(refund))

