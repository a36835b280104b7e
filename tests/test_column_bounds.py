"""Every value a request body may carry fits the column it is stored in, on MariaDB as on SQLite.

SQLite stores any length; MariaDB in strict mode refuses a value that does not fit, and the
request would fail with a 500 after it passed validation. A VARCHAR(n) of utf8mb4 holds n
characters; a TEXT holds 65,535 bytes, and a character takes up to four. So each field of each
request model is mapped to the column that stores it, and its limits are compared with that
column's: a new field must say where it goes (or that nothing stores it) before this passes.
"""
from __future__ import annotations

import enum
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Union

import annotated_types
import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from sqlalchemy import JSON, BigInteger, Column, Enum, Integer, LargeBinary, MetaData, String, Table, Text
from sqlalchemy.orm import InstrumentedAttribute

from server.accounts import routes as accounts
from server.accounts.models import AuditEntry, Member, Staff
from server.api import MAX_INT, TEXT_BYTES, Body, Utf8Bytes
from server.db import Base
from server.distribution import routes as distribution
from server.distribution.models import Distributor, DistributorTier, Grade, Material, ProgrammeRules
from server.feedback import routes as feedback
from server.feedback.models import FeedbackItem
from server.risk import routes as risk
from server.risk.models import RiskReview
from server.notices import routes as notices
from server.notices.models import Notice
from server.notifications import routes as notifications
from server.notifications.models import SubscriptionAllowance
from server.orders import contract_routes as contracts
from server.orders import routes as orders
from server.orders.models import Installment, Order, OrderEvent, OrderItem, Product, Refund, Sku
from server.points import routes as points
from server.points import share_routes as shares
from server.points.models import Entry, LedgerTransaction, Redemption, RedemptionItem, RewardOverride, ShareOpen, StageBonusRule
from server.posters import routes as posters
from server.posters.models import PosterImage, PosterTemplate
from server.referral import routes as referral
from server.referral import signin_routes as signin
from server.referral.models import Lead, LeadNote, Partner, PartnerPayout, Scene, TouchEvent
from server.settings import routes as settings
from server.settings.models import Setting
from server.training import routes as training
from server.training.models import Course, Lesson, QuizAttempt, QuizQuestion

#: The largest value a MySQL INT (``Mapped[int]`` without a type) holds.
MAX_INT32 = 2**31 - 1
#: A pattern that repeats without a limit counts as unbounded.
UNBOUNDED = 2**16

#: Request model -> the table its fields are stored in, under the same names unless FIELDS says otherwise.
BODY_MODELS: dict[type[Body], type[Base]] = {
    accounts.ProfileBody: Member,
    accounts.CreateStaffBody: Staff,
    accounts.StaffPatchBody: Staff,
    accounts.MemberPatchBody: Member,
    distribution.ApplyBody: Distributor,
    distribution.AppointBody: Distributor,
    distribution.DecisionBody: Distributor,
    distribution.TierPatchBody: DistributorTier,
    distribution.GradeBody: Grade,
    distribution.GradePatchBody: Grade,
    distribution.MaterialBody: Material,
    distribution.MaterialPatchBody: Material,
    distribution.RulesBody: ProgrammeRules,
    distribution.RulesPatchBody: ProgrammeRules,
    notices.NoticeBody: Notice,
    notices.NoticePatchBody: Notice,
    referral.SceneBody: Scene,
    referral.LeadBody: Lead,
    referral.ReviewBody: Lead,
    referral.PartnerBody: Partner,
    referral.PartnerPatchBody: Partner,
    referral.PartnerSceneBody: Scene,
    referral.AssignBody: Lead,
    referral.FollowUpBody: LeadNote,
    referral.LinkMemberBody: Lead,
    referral.PayoutBody: PartnerPayout,
    settings.SettingBody: Setting,
    orders.LineBody: OrderItem,
    orders.OrderBody: Order,
    orders.RefundBody: Refund,
    orders.ShipBody: Order,
    orders.RejectBody: Refund,
    orders.ProductBody: Product,
    orders.ProductPatchBody: Product,
    orders.SkuBody: Sku,
    orders.SkuPatchBody: Sku,
    contracts.InstallmentBody: Installment,
    contracts.ContractBody: Order,
    contracts.ReceiveBody: Installment,
    points.ItemBody: RedemptionItem,
    points.ItemPatchBody: RedemptionItem,
    points.RedeemBody: Redemption,
    points.OverrideBody: RewardOverride,
    points.OverridePatchBody: RewardOverride,
    points.StageRuleBody: StageBonusRule,
    points.StageRulePatchBody: StageBonusRule,
    posters.PosterBody: Scene,
    posters.TemplateBody: PosterTemplate,
    posters.TemplatePatchBody: PosterTemplate,
    training.CourseBody: Course,
    training.CoursePatchBody: Course,
    training.LessonBody: Lesson,
    training.LessonPatchBody: Lesson,
    training.QuestionBody: QuizQuestion,
    training.QuizBody: Course,
    training.AnswersBody: QuizAttempt,
    feedback.FeedbackBody: FeedbackItem,
    feedback.TransitionBody: FeedbackItem,
}

Target = InstrumentedAttribute[Any]
#: (request model, field) -> the columns it is stored in, where its name or table differs from BODY_MODELS.
FIELDS: dict[tuple[type[Body], str], tuple[Target, ...]] = {
    (notifications.SubscriptionResult, "template_id"): (SubscriptionAllowance.template_id,),
    (signin.WxLoginBody, "scene"): (TouchEvent.scene, Order.scene_code),
    (distribution.AppointBody, "reason"): (Distributor.status_reason,),
    (distribution.DecisionBody, "reason"): (Distributor.status_reason,),
    (distribution.ApplyBody, "rules_version"): (ProgrammeRules.number,),
    (referral.BindBody, "scene"): (TouchEvent.scene,),
    (referral.LeadBody, "scene"): (Lead.scene_code, TouchEvent.scene),
    (referral.ReviewBody, "note"): (Lead.review_note,),
    (referral.FollowUpBody, "state"): (LeadNote.follow_up, Lead.follow_up),
    (referral.FollowUpBody, "note"): (LeadNote.body,),
    (referral.PayoutBody, "start"): (PartnerPayout.period_start,),
    (referral.PayoutBody, "end"): (PartnerPayout.period_end,),
    (orders.SettleOfflineBody, "note"): (OrderEvent.detail, AuditEntry.detail),
    (orders.ResendAbnormalBody, "target"): (OrderEvent.detail, AuditEntry.detail),
    (orders.ResendAbnormalBody, "bank_type"): (AuditEntry.detail,),
    (orders.AddressBody, "name"): (Order.address,),
    (orders.AddressBody, "phone"): (Order.address,),
    (orders.AddressBody, "province"): (Order.address,),
    (orders.AddressBody, "city"): (Order.address,),
    (orders.AddressBody, "district"): (Order.address,),
    (orders.AddressBody, "detail"): (Order.address,),
    (orders.OrderBody, "scene"): (Order.scene_code, TouchEvent.scene),
    (orders.RefundBody, "reason"): (Refund.reason, OrderEvent.detail),
    (orders.RejectBody, "reason"): (Refund.reason, OrderEvent.detail),
    (orders.SkuPatchBody, "stock_delta"): (Sku.stock,),
    (contracts.ContractBody, "amount_fen"): (Order.total_fee,),
    (contracts.CancelBody, "reason"): (OrderEvent.detail,),
    (points.ItemPatchBody, "stock_delta"): (RedemptionItem.stock,),
    (points.ContactBody, "name"): (Redemption.contact,),
    (points.ContactBody, "phone"): (Redemption.contact,),
    (points.ContactBody, "address"): (Redemption.contact,),
    (points.ContactBody, "note"): (Redemption.contact,),
    (points.DecisionBody, "note"): (Redemption.staff_note,),
    (points.AdjustmentBody, "member_id"): (LedgerTransaction.member_id,),
    (points.AdjustmentBody, "amount"): (Entry.amount,),
    (points.AdjustmentBody, "reason"): (LedgerTransaction.reason,),
    (shares.ShareOpenBody, "scene"): (ShareOpen.scene_code,),
    (posters.PosterBody, "template_id"): (PosterImage.template_id,),
    (feedback.FeedbackBody, "distributor_member_id"): (FeedbackItem.reported_member_id,),
    (feedback.FeedbackBody, "scene"): (FeedbackItem.scene_code,),
    (feedback.TransitionBody, "expected_state"): (FeedbackItem.state,),
    (risk.DecisionBody, "note"): (RiskReview.note,),
}

#: (request model, field) -> why no column stores what the client sent.
NO_COLUMN: dict[tuple[type[Body], str], str] = {
    (notifications.SubscriptionResult, "result"): "a choice of four; only an acceptance is counted",
    (distribution.LeaderboardQuery, "period"): "a choice between two periods, never stored",
    (signin.WxLoginBody, "code"): "sent to WeChat, never stored",
    (accounts.PhoneBody, "code"): "sent to WeChat; the phone number it yields is stored encrypted",
    (accounts.StaffLoginBody, "username"): "only looked up",
    (accounts.StaffLoginBody, "password"): "only checked against the stored hash",
    (accounts.CreateStaffBody, "password"): "only its hash is stored, whose length does not depend on it",
    (distribution.ApplyBody, "phone"): "stored encrypted, digested and masked; 21 characters at most encrypt into far less than 255",
    (distribution.AppointBody, "phone"): "stored encrypted, digested and masked, like ApplyBody.phone",
    (distribution.DecisionBody, "action"): "chooses the transition; the status it leads to is stored",
    (referral.LeadBody, "phone"): "stored encrypted and masked, like ApplyBody.phone",
    (referral.StatementQuery, "start"): "the period a statement reads",
    (referral.StatementQuery, "end"): "the period a statement reads",
    (orders.ResendAbnormalBody, "bank_account"): "sent to WeChat Pay encrypted; the audit log keeps its last four digits",
    (orders.ResendAbnormalBody, "real_name"): "sent to WeChat Pay encrypted, never stored",
    (orders.OrderBody, "items"): "each line is an OrderItem, checked as LineBody",
    (orders.OrderBody, "address"): "checked field by field as AddressBody",
    (contracts.ContractBody, "installments"): "each is an Installment, checked as InstallmentBody",
    (points.RedeemBody, "contact"): "checked field by field as ContactBody",
    (posters.TemplateBody, "background_image"): "decoded from base64 into a LONGBLOB",
    (posters.TemplatePatchBody, "background_image"): "decoded from base64 into a LONGBLOB",
    (training.QuizBody, "questions"): "each is a QuizQuestion, checked as QuestionBody",
    (training.LessonOrderBody, "lesson_ids"): "picks the lessons whose positions are rewritten",
    (training.PublicationBody, "published"): "chooses the state; the state is stored",
    (feedback.TransitionBody, "action"): "chooses the transition; the state it leads to is stored",
    (risk.DecisionBody, "decision"): "chooses the decision; the review's state it leads to is stored",
}

#: (request model, field) -> why a value of any shape is bounded before it is stored.
ANY_VALUE: dict[tuple[type[Body], str], str] = {
    (settings.SettingBody, "value"): "parsed by the setting's spec; test_text_settings_are_bounded checks the strings",
    (posters.TemplateBody, "layout"): "resolve_layout keeps only known fields of known types (numbers, colours, booleans)",
    (posters.TemplatePatchBody, "layout"): "resolve_layout keeps only known fields of known types (numbers, colours, booleans)",
}


@dataclass
class Limits:
    """What a field lets through: the longest text (characters and UTF-8 bytes) and the integer range."""

    text: bool = False
    chars: float = 0
    bytes: float = 0
    integer: bool = False
    low: float = 0
    high: float = 0
    any_value: bool = False


def _pattern_width(pattern: str) -> float:
    """The most characters ``pattern`` can match, or infinity."""
    width = re._parser.parse(pattern).getwidth()[1]  # type: ignore[attr-defined]
    return float("inf") if width >= UNBOUNDED else width


def _walk(annotation: Any, metadata: list[Any], limits: Limits) -> None:
    """Widen ``limits`` by what ``annotation`` with ``metadata`` accepts."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        _walk(base, [*metadata, *extra], limits)
        return
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            _walk(arg, metadata, limits)
        return
    flat: list[Any] = []
    for item in metadata:
        flat.extend(item.metadata if isinstance(item, FieldInfo) else [item])
    if origin is Literal:
        values = typing.get_args(annotation)
        if all(isinstance(v, str) for v in values):
            limits.text = True
            longest = max(len(v) for v in values)
            limits.chars, limits.bytes = max(limits.chars, longest), max(limits.bytes, longest)
        return
    if annotation is Any or origin in (dict, list):
        limits.any_value = True
        return
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        limits.text = True
        longest = max(len(str(member.value)) for member in annotation)
        limits.chars, limits.bytes = max(limits.chars, longest), max(limits.bytes, longest)
        return
    if annotation is str:
        chars: float = float("inf")
        max_bytes: float = float("inf")
        for item in flat:
            if getattr(item, "max_length", None) is not None:
                chars = min(chars, item.max_length)
            if getattr(item, "pattern", None) is not None:
                chars = min(chars, _pattern_width(item.pattern))
            if isinstance(item, Utf8Bytes):
                max_bytes = min(max_bytes, item.max_bytes)
        limits.text = True
        limits.chars = max(limits.chars, chars)
        limits.bytes = max(limits.bytes, min(max_bytes, 4 * chars))
        return
    if annotation is int:
        low, high = -MAX_INT, MAX_INT
        for item in flat:
            if isinstance(item, annotated_types.Ge):
                low = max(low, item.ge)
            if isinstance(item, annotated_types.Le):
                high = min(high, item.le)
        limits.integer = True
        limits.low, limits.high = min(limits.low, low), max(limits.high, high)


def field_limits(field: FieldInfo) -> Limits:
    limits = Limits(low=float("inf"), high=float("-inf"))
    _walk(field.annotation, list(field.metadata), limits)
    return limits


def _nested_body(annotation: Any) -> bool:
    """Whether the field holds other request models (checked as models of their own)."""
    args = typing.get_args(annotation)
    return (isinstance(annotation, type) and issubclass(annotation, BaseModel)) or any(_nested_body(arg) for arg in args)


def request_models(app: Flask) -> list[type[Body]]:
    """Every Body subclass the app's modules define (``app`` has imported them all)."""
    found: list[type[Body]] = []
    pending = list(Body.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def columns_of(cls: type[Body], name: str) -> tuple[Column[Any], ...] | None:
    """The columns that store field ``name`` of ``cls``; None when the field is unmapped."""
    if (cls, name) in FIELDS:
        return tuple(attr.property.columns[0] for attr in FIELDS[cls, name])
    model = BODY_MODELS.get(cls)
    if model is not None and name in model.__table__.columns:
        return (model.__table__.columns[name],)
    return None


def problems_of(limits: Limits, column: Column[Any]) -> Iterator[str]:
    """Why ``limits`` let through something ``column`` cannot hold."""
    kind = column.type
    where = f"{column.table.name}.{column.name}"
    if limits.any_value and not isinstance(kind, JSON):
        yield f"takes any JSON value, but {where} is {kind!r}"
    if limits.text:
        if isinstance(kind, (Enum, String)) and not isinstance(kind, Text) and kind.length is not None:
            if limits.chars > kind.length:
                yield f"allows {limits.chars} characters, {where} holds {kind.length}"
        elif isinstance(kind, Text) or (isinstance(kind, String) and kind.length is None):
            if limits.bytes > TEXT_BYTES:
                yield f"allows {limits.bytes} UTF-8 bytes, the TEXT {where} holds {TEXT_BYTES}"
        elif isinstance(kind, JSON):
            if limits.chars == float("inf"):
                yield f"allows text of any length into the JSON {where}"
        elif not isinstance(kind, LargeBinary):
            yield f"is text, but {where} is {kind!r}"
    if limits.integer:
        if isinstance(kind, BigInteger):
            top = MAX_INT
        elif isinstance(kind, Integer):
            top = MAX_INT32
        else:
            yield f"is an integer, but {where} is {kind!r}"
            return
        if limits.high > top or limits.low < -top - 1:
            yield f"allows {limits.low}..{limits.high}, {where} holds {-top - 1}..{top}"


def test_every_request_field_fits_its_column(app: Flask) -> None:
    unmapped, overflows = [], []
    for cls in request_models(app):
        for name, field in cls.model_fields.items():
            label = f"{cls.__module__}.{cls.__qualname__}.{name}"
            if (cls, name) in NO_COLUMN:
                continue
            limits = field_limits(field)
            if limits.any_value and (cls, name) in ANY_VALUE:
                continue
            columns = columns_of(cls, name)
            if columns is None:
                if not _nested_body(field.annotation):
                    unmapped.append(label)
                continue
            for column in columns:
                overflows.extend(f"{label} {problem}" for problem in problems_of(limits, column))
    assert not unmapped, f"request fields with no column in FIELDS, BODY_MODELS or NO_COLUMN: {unmapped}"
    assert not overflows, "\n".join(overflows)


def test_the_tables_name_real_fields(app: Flask) -> None:
    """A mapping for a field that was renamed or removed would hide the new one."""
    models = set(request_models(app))
    stale = [
        f"{cls.__qualname__}.{name}"
        for cls, name in [*FIELDS, *NO_COLUMN, *ANY_VALUE]
        if cls not in models or name not in cls.model_fields
    ]
    assert not stale, stale
    assert not set(NO_COLUMN) & set(FIELDS), "a field is either stored or not"


def test_the_check_sees_the_units_the_database_counts() -> None:
    """Limits read from the annotations, compared in the column's unit: characters, bytes, integer range."""

    class Sample(BaseModel):  # not a Body: it must not join the app's request models
        varchar: typing.Annotated[str, annotated_types.MaxLen(8)] | None = None
        text: typing.Annotated[str, annotated_types.MaxLen(20_000), Utf8Bytes(TEXT_BYTES)] = ""
        wide: typing.Annotated[str, annotated_types.MaxLen(20_000)] = ""
        free: str = ""
        count: typing.Annotated[int, annotated_types.Ge(0), annotated_types.Le(MAX_INT32 + 1)] = 0

    table = Table("sample", MetaData(), Column("s", String(8)), Column("t", Text), Column("j", JSON), Column("n", Integer), Column("b", BigInteger))
    limits = {name: field_limits(field) for name, field in Sample.model_fields.items()}
    assert (limits["varchar"].chars, limits["varchar"].bytes) == (8, 32)
    assert not list(problems_of(limits["varchar"], table.c.s))
    assert not list(problems_of(limits["text"], table.c.t))
    assert list(problems_of(limits["wide"], table.c.t)) == ["allows 80000 UTF-8 bytes, the TEXT sample.t holds 65535"]
    assert list(problems_of(limits["free"], table.c.j))
    assert list(problems_of(limits["count"], table.c.n)) and not list(problems_of(limits["count"], table.c.b))
    assert _pattern_width(r"^\+?[0-9]{5,20}$") == 21 and _pattern_width(r"^a+$") == float("inf")


def test_text_settings_are_bounded(app: Flask) -> None:
    """A setting is stored as JSON, which holds any length; a text setting says how long it may be."""
    from server.settings.services import specs

    unbounded = [spec.key for spec in specs() if spec.type is str and not spec.choices and spec.max_length is None]
    assert not unbounded, f"text settings without max_length: {unbounded}"


# -- the longest values, through the API, into the configured database --------------------------

#: U+1F600: one character, four bytes in UTF-8 (utf8mb4).
WIDE = "\U0001f600"
#: The most four-byte characters a TEXT column holds.
TEXT_CHARS = TEXT_BYTES // 4


def test_the_longest_titles_and_texts_are_stored(client: FlaskClient, wx_login: Callable[..., dict[str, Any]], staff_login: Callable[[str], dict[str, str]]) -> None:
    """Products with 128-character titles and descriptions as long as TEXT holds, ordered together."""
    ops = staff_login("operations")
    skus = []
    for n in range(2):
        body = {"title": f"{n}" + "长" * 127, "subtitle": WIDE * 255, "description": WIDE * TEXT_CHARS}
        product = client.post("/admin/api/v1/products", headers=ops, json=body)
        assert product.status_code == 201, product.get_json()
        assert product.get_json()["data"]["description"] == WIDE * TEXT_CHARS
        sku = client.post(f"/admin/api/v1/products/{product.get_json()['data']['id']}/skus", headers=ops, json={"name": WIDE * 64, "price_fen": 100, "stock": 5})
        assert sku.status_code == 201, sku.get_json()
        skus.append(sku.get_json()["data"]["id"])
    address = {"name": WIDE * 32, "phone": "+" + "8" * 20, "province": WIDE * 64, "city": WIDE * 64, "district": WIDE * 64, "detail": WIDE * 255}
    alice = wx_login("alice")
    order = client.post("/api/v1/orders", headers=alice["headers"], json={"items": [{"sku_id": s, "quantity": 1} for s in skus], "address": address, "remark": WIDE * 255})
    assert order.status_code == 201, order.get_json()
    title = order.get_json()["data"]["title"]
    assert len(title) == 128 and title.startswith("0长") and title.endswith("… 等 2 件")
    assert order.get_json()["data"]["address"] == address

    item = {"kind": "goods", "title": WIDE * 128, "description": WIDE * TEXT_CHARS, "price": 200_000}
    created = client.post("/admin/api/v1/points/items", headers=ops, json=item)
    assert created.status_code == 201, created.get_json()
    patched = client.patch(f"/admin/api/v1/points/items/{created.get_json()['data']['id']}", headers=ops, json={"description": "长" * 20_000})
    assert patched.status_code == 200, patched.get_json()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/admin/api/v1/products", {"title": "茶", "description": WIDE * (TEXT_CHARS + 1)}),
        ("/admin/api/v1/products", {"title": "茶", "description": "a" * 20_001}),
        ("/admin/api/v1/points/items", {"kind": "goods", "title": "茶", "price": 200_000, "description": WIDE * (TEXT_CHARS + 1)}),
    ],
)
def test_a_text_longer_than_its_column_is_refused(client: FlaskClient, staff_login: Callable[[str], dict[str, str]], path: str, body: dict[str, Any]) -> None:
    response = client.post(path, headers=staff_login("operations"), json=body)
    assert response.status_code == 422
    assert response.get_json()["data"]["errors"][0]["field"] == "description"


def test_a_description_patched_past_its_column_is_refused(client: FlaskClient, staff_login: Callable[[str], dict[str, str]]) -> None:
    ops = staff_login("operations")
    product = client.post("/admin/api/v1/products", headers=ops, json={"title": "茶"}).get_json()["data"]
    response = client.patch(f"/admin/api/v1/products/{product['id']}", headers=ops, json={"description": WIDE * (TEXT_CHARS + 1)})
    assert response.status_code == 422
    assert client.get(f"/admin/api/v1/products/{product['id']}", headers=ops).get_json()["data"]["description"] == ""
