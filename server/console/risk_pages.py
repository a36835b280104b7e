"""The console's risk pages: the review queue, one review's evidence with the decisions, and the
report of signals by type and outcome; decisions go through the same service as the admin API."""
from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for

from server import db
from server.console import labels
from server.console import points_queries as pq
from server.console.points_pages import id_value
from server.console.redemption_pages import enum_arg
from server.console.report_pages import chart, report_period
from server.console.routes import COUNT_CAP, PAGE_SIZE, bp, form_text, int_arg, pages
from server.console.session import console_view, current_staff
from server.errors import AppError
from server.risk import queries, services
from server.risk.errors import ReviewNotFoundError
from server.risk.models import ReviewState, RiskEvent, RiskReview
from server.risk.signals import SIGNALS

#: What the console says when a decision is refused, by envelope code.
REFUSALS = {
    40995: "该审核的状态已变化（可能已有同事处理），不能这样处理。",
    40951: "奖励已不在可操作的状态（可能已经到账），未做任何更改。",
    40996: "该会员不是已通过的分销员，无法冻结。",
    42200: "请选择处理方式。",
}


def _decisions(review: RiskReview) -> list[str]:
    """The decisions the review's state allows (reverse only when something is held)."""
    allowed = [name for (source, _), name in services.TRANSITIONS.items() if source == review.state]
    return [d for d in allowed if d != "reverse" or review.held]


@bp.get("/risk")
@console_view("risk")
def risk_reviews() -> Any:
    """The queue: reviews newest first, by state, event and member."""
    sess = db.session()
    problems: list[str] = []
    state = enum_arg(request.args, "state", ReviewState, problems, "状态")
    event = enum_arg(request.args, "event", RiskEvent, problems, "事件")
    member_arg = request.args.get("member", "").strip()
    member_id = id_value(member_arg) if member_arg else None
    if member_arg and member_id is None:
        problems.append("会员 ID 应为数字。")
    page = int_arg("page", 1)
    rows, total = db.paginate(
        sess,
        queries.reviews_query(state=state, event=event, member_id=member_id),
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
        order_by=(RiskReview.id.desc(),),
        count_cap=COUNT_CAP,
    )
    return render_template(
        "console/risk.html",
        rows=rows,
        members=pq.members_by_id(sess, {r.member_id for r in rows if r.member_id}),
        states=list(ReviewState),
        events=list(RiskEvent),
        signals=SIGNALS,
        args=request.args,
        problems=problems,
        pager=pages(total),
    )


@bp.get("/risk/<int:review_id>")
@console_view("risk")
def risk_review(review_id: int, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    """One review: why it was scored, the order or lead, the linked accounts (masked), the timeline, the decisions."""
    sess = db.session()
    try:
        review = services.get_review(sess, review_id)
    except ReviewNotFoundError:
        abort(404)
    return render_template(
        "console/risk_review.html",
        review=review,
        evidence=queries.evidence(sess, review),
        signals=SIGNALS,
        decisions=_decisions(review),
        errors=errors or {},
    ), status


@bp.post("/risk/<int:review_id>/decisions")
@console_view("risk.decide")
def risk_decide(review_id: int) -> Any:
    """Release or reverse the held rewards, freeze the distributor, mark a false positive, or reopen."""
    decision = request.form.get("decision", "")
    note = form_text("note", 255)
    if decision not in services.DECISIONS:
        return risk_review(review_id, errors={"decision": REFUSALS[42200]}, status=422)
    try:
        services.decide_review(db.session(), review_id, decision, staff=current_staff(), note=note)
    except AppError as error:
        if error.http_status == 404:
            abort(404)
        return risk_review(review_id, errors={"decision": REFUSALS.get(error.code, error.message)}, status=error.http_status)
    flash(f"风控审核 #{review_id}：{labels.REVIEW_DECISION[decision]}。", "success")
    return redirect(url_for("console.risk_review", review_id=review_id), 303)


@bp.get("/risk/report")
@console_view("risk")
def risk_report() -> Any:
    """Signals by type and by their review's outcome over a period (China-time days)."""
    period, problems = report_period()
    report = queries.signal_report(db.session(), period.start, period.end)
    outcomes = [s.value for s in ReviewState]
    fired = sorted({row["signal"] for row in report["totals"]}, key=list(SIGNALS).index)
    table = {(row["signal"], row["outcome"]): row["count"] for row in report["totals"]}
    spec = chart(
        [SIGNALS[s][1] for s in fired],
        *[{"name": labels.REVIEW_STATE[o], "type": "bar", "data": [table.get((s, o), 0) for s in fired]} for o in outcomes],
        horizontal=True,
    )
    return render_template(
        "console/risk_report.html", period=period, problems=problems, report=report, fired=fired, outcomes=outcomes, table=table, signals=SIGNALS, spec=spec
    )
