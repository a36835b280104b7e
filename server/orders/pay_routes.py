"""WeChat Pay's notify URLs (v2 payment, v2 refund, v3 both) and the ``reconcile`` and ``pay-keys`` commands.

Each notification is verified by the adapter, applied by ``server.orders.payments``,
committed, and answered in WeChat's words. Anything refused (forged, stale, for another
merchant, an unknown order, a wrong amount) changes nothing and gets the failure answer,
which makes WeChat send it again later; a repeat of one already applied gets success.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable

import click
from flask import Blueprint, Response, current_app, jsonify, request

from server import db
from server.db import utcnow
from server.errors import AppError
from server.orders import payments
from server.wechat import wechat_pay
from server.wechat.client import WeChatError
from server.wechat.pay import IgnoredNotice, PayNotConfiguredError, PayNotice, RefundNotice, china_time, v2_reply

# No url_prefix (the paths are WeChat's, under /wechat), and cli_group=None puts ``reconcile``
# and ``pay-keys`` at the top of ``python -m server``.
bp = Blueprint("wechat_pay", __name__, cli_group=None)


def _v2_answer(ok: bool, msg: str = "OK") -> Response:
    return Response(v2_reply(ok, msg), mimetype="application/xml")


def _v3_failure(status: int, message: str) -> Response:
    response = jsonify(code="FAIL", message=message)
    response.status_code = status
    return response


def _apply(handle: Callable[..., payments.NoticeOutcome], notice: PayNotice | RefundNotice) -> tuple[int, str] | None:
    """Apply ``notice`` and commit; None when done, else (HTTP status, why) with nothing kept."""
    try:
        handle(db.session(), notice)
        # Commits here, by design: a commit that fails must still be answered in WeChat's words.
        db.commit()
    except AppError as error:
        # Authentic, but not something our books can take (an unknown order, another amount).
        db.session().rollback()
        current_app.logger.warning("WeChat Pay %s notification for %s refused: %s", notice.api, notice.out_trade_no, error.message)
        return 422, error.message
    except Exception:
        # A deadlock or a lost connection: WeChat resends, and the resend finds a clean slate.
        db.session().rollback()
        current_app.logger.exception("WeChat Pay %s notification for %s failed", notice.api, notice.out_trade_no)
        return 500, "internal error, send it again"
    return None


def _refused(kind: str, error: WeChatError) -> None:
    current_app.logger.warning("WeChat Pay %s notification refused: %s", kind, error.errmsg)


@bp.post(payments.V2_PAY_NOTIFY_PATH)
def v2_pay_notify() -> Response:
    """A v2 payment notification (XML signed with the API key)."""
    try:
        notice = wechat_pay().v2_client().parse_pay_notify(request.get_data())
    except WeChatError as error:
        _refused("v2 payment", error)
        return _v2_answer(False, "not configured" if isinstance(error, PayNotConfiguredError) else "invalid notification")
    problem = _apply(payments.handle_pay_notice, notice)
    return _v2_answer(False, problem[1]) if problem else _v2_answer(True)


@bp.post(payments.V2_REFUND_NOTIFY_PATH)
def v2_refund_notify() -> Response:
    """A v2 refund notification (``req_info`` encrypted with the API key's MD5)."""
    try:
        notice = wechat_pay().v2_client().parse_refund_notify(request.get_data())
    except WeChatError as error:
        _refused("v2 refund", error)
        return _v2_answer(False, "not configured" if isinstance(error, PayNotConfiguredError) else "invalid notification")
    problem = _apply(payments.handle_refund_notice, notice)
    return _v2_answer(False, problem[1]) if problem else _v2_answer(True)


@bp.post(payments.V3_NOTIFY_PATH)
def v3_notify() -> Response:
    """A v3 notification (``TRANSACTION.SUCCESS`` or ``REFUND.*``): 204 when taken; when not, ``{"code": "FAIL"}``
    with 400 (unverifiable), 422 (verified but not for our books), 500 or 503."""
    try:
        notice = wechat_pay().v3_client().parse_notification(request.headers, request.get_data())
    except PayNotConfiguredError as error:
        _refused("v3", error)
        return _v3_failure(503, "not configured")
    except WeChatError as error:
        _refused("v3", error)
        return _v3_failure(400, "invalid notification")
    if isinstance(notice, IgnoredNotice):
        current_app.logger.info("WeChat Pay v3 notification %s acknowledged, not acted on", notice.event_type)
        return Response(status=204)
    handle = payments.handle_pay_notice if isinstance(notice, PayNotice) else payments.handle_refund_notice
    problem = _apply(handle, notice)
    return _v3_failure(*problem) if problem else Response(status=204)


@bp.cli.command("reconcile")
@click.option("--since-hours", default=24, show_default=True, type=click.IntRange(1, 24 * 90), help="How far back to look for disagreements.")
def reconcile_command(since_hours: int) -> None:
    """Settle unpaid orders past their time with WeChat Pay, list orders WeChat disagrees with, resend stuck refunds."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # current_app is typed as the Flask it proxies
    now = utcnow()
    pay = wechat_pay()
    summary = payments.reconcile_unpaid(pay, now)
    counts = summary.counts()
    click.echo("unpaid orders: " + ", ".join(f"{n} {name}" for name, n in counts.items()))
    disagreements = payments.check_disagreements(db.session(), pay, now - timedelta(hours=since_hours))
    click.echo(f"disagreements with WeChat Pay: {len(disagreements)}")
    for found in disagreements:
        click.echo(f"  order {found.order_id} ({found.out_trade_no}): {found.status} here, {found.trade_state} at WeChat Pay: {found.problem}")
    accepted, waiting = payments.retry_refunds(app, now)
    click.echo(f"refunds resent: {accepted} accepted, {waiting} still waiting")


@bp.cli.command("pay-keys")
@click.option("--refresh", is_flag=True, help="Download the platform certificates from WeChat Pay now.")
def pay_keys_command(refresh: bool) -> None:
    """The WeChat Pay v3 keys answers and notifications are verified with: the mode, the public key's id,
    and each platform certificate's serial and validity (China time)."""
    try:
        v3 = wechat_pay().v3_client()
    except PayNotConfiguredError as error:
        raise click.ClickException(error.errmsg) from None
    if refresh and not v3.refresh_certificates(force=True):
        raise click.ClickException("the platform certificates could not be downloaded (see the log)")
    keys = v3.keys
    click.echo(f"mode: {keys.mode}")
    if keys.public_key_id:
        click.echo(f"public key: {keys.public_key_id}")
    if keys.uses_certificates:
        now = keys.clock()
        certificates = keys.certificates()
        if not certificates:
            click.echo("platform certificates: none yet (downloaded on the first message that needs one, or with --refresh)")
        for certificate in certificates:
            state = "in force" if certificate.valid_at(now) else "expired" if now > certificate.expires else "not yet in force"
            click.echo(f"platform certificate {certificate.serial}: {_china(certificate.effective)} to {_china(certificate.expires)}, {state}")


def _china(epoch: float) -> str:
    if epoch in (0.0, float("inf")):
        return "(not stated)"
    return china_time(datetime.fromtimestamp(epoch, timezone.utc)).strftime("%Y-%m-%d %H:%M")
