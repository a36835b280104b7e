"""The risk review queue for staff (/admin/api/v1/risk): reviews with their evidence, decisions, and
the report of signals by type and outcome."""
from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Annotated, Any, Literal

from flask import Blueprint
from pydantic import BeforeValidator, Field, StringConstraints

from server import db
from server.accounts.auth import current_staff, staff_required
from server.accounts.models import StaffRole
from server.api import Body, Page, Query, iso, parse_body, parse_query
from server.clock import local
from server.errors import ValidationError, envelope
from server.risk import queries, services
from server.risk.models import ReviewState, RiskEvent, RiskReview
from server.risk.signals import SIGNALS

admin_bp = Blueprint("risk_admin", __name__, url_prefix="/admin/api/v1/risk")

#: Who may read the queue and the report (the owner always may); deciding is for operations.
READERS = (StaffRole.operations, StaffRole.finance)
DECIDERS = (StaffRole.operations,)
DAY_PATTERN = re.compile(r"^20\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
#: The report's default: the last 30 days.
DEFAULT_DAYS = 30


def _day_text(value: Any) -> Any:
    if isinstance(value, str) and not DAY_PATTERN.match(value):
        raise ValueError("must be a date YYYY-MM-DD between 2000-01-01 and 2099-12-31")
    return value


Day = Annotated[date, BeforeValidator(_day_text)]


class ReviewQuery(Page):
    state: ReviewState | None = None
    event: RiskEvent | None = None
    member_id: int | None = Field(None, ge=1)


class DecisionBody(Body):
    decision: Literal["release", "reverse", "freeze", "false_positive", "reopen"]
    note: Annotated[str, StringConstraints(max_length=255)] = ""


class ReportQuery(Query):
    start: Day | None = Field(None, alias="from")
    end: Day | None = Field(None, alias="to")


def report_period(start: date | None, end: date | None) -> tuple[date, date]:
    """``from`` and ``to`` checked: in order, at most a year and a day; the last 30 days by default."""
    end = end or local(db.utcnow()).date()
    start = start or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise ValidationError(data={"errors": [{"field": "from", "error": "must be on or before to"}]})
    if (end - start).days + 1 > queries.MAX_REPORT_DAYS:
        raise ValidationError(data={"errors": [{"field": "to", "error": f"a report covers at most {queries.MAX_REPORT_DAYS} days"}]})
    return start, end


def serialize_review(review: RiskReview, hold: str | None = None) -> dict[str, Any]:
    return {
        "id": review.id,
        "event": review.event.value,
        "subject": review.subject,
        "ref_id": review.ref_id,
        "member_id": review.member_id,
        "score": review.score,
        "reasons": [
            {"signal": r["signal"], "points": r["points"], "label": SIGNALS.get(r["signal"], (0, ""))[1], "detail": r.get("detail", {}), "members": r.get("members", [])}
            for r in review.reasons
        ],
        "held": review.held,
        "hold": hold,
        "state": review.state.value,
        "decided_by": review.decided_by,
        "decided_at": iso(review.decided_at),
        "note": review.note,
        "created_at": iso(review.created_at),
    }


def serialize_detail(review: RiskReview) -> dict[str, Any]:
    found = queries.evidence(db.session(), review)
    timeline = [dict(t, at=iso(t["at"])) for t in found["timeline"]]
    return serialize_review(review, found["hold"]) | {
        "subject_detail": found["subject_detail"],
        "focus_member_id": found["focus_member_id"],
        "linked_accounts": found["linked_accounts"],
        "timeline": timeline,
    }


@admin_bp.get("/reviews")
@staff_required(*READERS)
def list_reviews() -> Any:
    """The review queue, newest first, by state, event and member."""
    query = parse_query(ReviewQuery)
    stmt = queries.reviews_query(state=query.state, event=query.event, member_id=query.member_id)
    rows, total = db.paginate(db.session(), stmt, offset=query.offset, limit=query.page_size, order_by=(RiskReview.id.desc(),))
    return envelope({"items": [serialize_review(r) for r in rows], "total": total, "page": query.page})


@admin_bp.get("/reviews/<int:review_id>")
@staff_required(*READERS)
def get_review(review_id: int) -> Any:
    """One review with its evidence: linked accounts (masked), the hold, and the member's timeline."""
    return envelope(serialize_detail(services.get_review(db.session(), review_id)))


@admin_bp.post("/reviews/<int:review_id>/decisions")
@staff_required(*DECIDERS)
def decide_review(review_id: int) -> Any:
    """Release or reverse the held rewards, freeze the distributor, mark a false positive, or reopen. Audited."""
    body = parse_body(DecisionBody)
    review = services.decide_review(db.session(), review_id, body.decision, staff=current_staff(), note=body.note)
    return envelope(serialize_detail(review))


@admin_bp.get("/report")
@staff_required(*READERS)
def report() -> Any:
    """Signals by type and by their review's outcome, per China-time day, over ``from``..``to``."""
    query = parse_query(ReportQuery)
    start, end = report_period(query.start, query.end)
    return envelope(queries.signal_report(db.session(), start, end))
