"""The console's role matrix is the admin API's: for every area tied to an endpoint, a role the API
refuses (403) is refused by the console too, and a role it lets through is let through."""
from __future__ import annotations

from typing import Any, Callable

import pytest
from flask import Flask

from server.accounts.models import StaffRole
from server.accounts.services import authenticate_staff
from server.console.roles import AREAS, allowed, roles_for
from server.errors import AppError

#: For each endpoint the matrix names: a request that gets past the role check (any answer but 401/403 means it did).
PROBES: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "GET /admin/api/v1/me": ("GET", "/admin/api/v1/me", None),
    "GET /admin/api/v1/members": ("GET", "/admin/api/v1/members", None),
    "GET /admin/api/v1/reports/funnel": ("GET", "/admin/api/v1/reports/funnel", None),
    "GET /admin/api/v1/points/members/{member_id}": ("GET", "/admin/api/v1/points/members/999999", None),
    "GET /admin/api/v1/settings": ("GET", "/admin/api/v1/settings", None),
    "PUT /admin/api/v1/settings/{key}": ("PUT", "/admin/api/v1/settings/no_such_setting", {"value": 1}),
    "GET /admin/api/v1/staff": ("GET", "/admin/api/v1/staff", None),
    "POST /admin/api/v1/distributors/{distributor_id}/decisions": ("POST", "/admin/api/v1/distributors/999999/decisions", {"action": "approve"}),
    "POST /admin/api/v1/leads/{lead_id}/review": ("POST", "/admin/api/v1/leads/999999/review", {"status": "valid"}),
    "POST /admin/api/v1/refunds/{refund_id}/approve": ("POST", "/admin/api/v1/refunds/999999/approve", {}),
    "POST /admin/api/v1/refunds/{refund_id}/resend": ("POST", "/admin/api/v1/refunds/999999/resend", {"merchant_bank_card": True}),
    "POST /admin/api/v1/points/redemptions/{redemption_id}/fulfil": ("POST", "/admin/api/v1/points/redemptions/999999/fulfil", {}),
    "GET /admin/api/v1/finance/confirmations": ("GET", "/admin/api/v1/finance/confirmations", None),
    "GET /admin/api/v1/distributors": ("GET", "/admin/api/v1/distributors", None),
    "POST /admin/api/v1/distributors": ("POST", "/admin/api/v1/distributors", {}),
    "PATCH /admin/api/v1/distributor-tiers/{tier}": ("PATCH", "/admin/api/v1/distributor-tiers/9", {}),
    "POST /admin/api/v1/grades": ("POST", "/admin/api/v1/grades", {}),
    "GET /admin/api/v1/materials": ("GET", "/admin/api/v1/materials", None),
    "POST /admin/api/v1/materials": ("POST", "/admin/api/v1/materials", {}),
    "GET /admin/api/v1/poster-templates": ("GET", "/admin/api/v1/poster-templates", None),
    "POST /admin/api/v1/poster-templates": ("POST", "/admin/api/v1/poster-templates", {}),
    "GET /admin/api/v1/points/transactions": ("GET", "/admin/api/v1/points/transactions", None),
    "POST /admin/api/v1/points/adjustments": ("POST", "/admin/api/v1/points/adjustments", {}),
    "GET /admin/api/v1/points/settlements": ("GET", "/admin/api/v1/points/settlements", None),
    "POST /admin/api/v1/points/settlements": ("POST", "/admin/api/v1/points/settlements", None),
    "GET /admin/api/v1/points/reward-overrides": ("GET", "/admin/api/v1/points/reward-overrides", None),
    "GET /admin/api/v1/compliance": ("GET", "/admin/api/v1/compliance", None),
    "GET /admin/api/v1/points/redemptions": ("GET", "/admin/api/v1/points/redemptions", None),
    "POST /admin/api/v1/points/redemptions/{redemption_id}/cancel": ("POST", "/admin/api/v1/points/redemptions/999999/cancel", {}),
    "POST /admin/api/v1/points/items": ("POST", "/admin/api/v1/points/items", {}),
    "GET /admin/api/v1/orders": ("GET", "/admin/api/v1/orders", None),
    "POST /admin/api/v1/orders/{order_id}/ship": ("POST", "/admin/api/v1/orders/999999/ship", {"carrier": "顺丰", "tracking_no": "SF1"}),
    "POST /admin/api/v1/orders/{order_id}/refunds": ("POST", "/admin/api/v1/orders/999999/refunds", {"reason": "x"}),
    "GET /admin/api/v1/refunds": ("GET", "/admin/api/v1/refunds", None),
    "POST /admin/api/v1/refunds/{refund_id}/reject": ("POST", "/admin/api/v1/refunds/999999/reject", {"reason": "x"}),
    "POST /admin/api/v1/refunds/{refund_id}/settle-offline": ("POST", "/admin/api/v1/refunds/999999/settle-offline", {"note": "x"}),
    "GET /admin/api/v1/products": ("GET", "/admin/api/v1/products", None),
    "PATCH /admin/api/v1/skus/{sku_id}": ("PATCH", "/admin/api/v1/skus/999999", {}),
    "GET /admin/api/v1/leads": ("GET", "/admin/api/v1/leads", None),
    "GET /admin/api/v1/distributor-rules": ("GET", "/admin/api/v1/distributor-rules", None),
    "POST /admin/api/v1/distributor-rules": ("POST", "/admin/api/v1/distributor-rules", {}),
    "GET /admin/api/v1/notices": ("GET", "/admin/api/v1/notices", None),
    "POST /admin/api/v1/notices": ("POST", "/admin/api/v1/notices", {}),
    "GET /admin/api/v1/notifications": ("GET", "/admin/api/v1/notifications", None),
    "GET /admin/api/v1/risk/reviews": ("GET", "/admin/api/v1/risk/reviews", None),
    "POST /admin/api/v1/risk/reviews/{review_id}/decisions": ("POST", "/admin/api/v1/risk/reviews/999999/decisions", {"decision": "release"}),
    "POST /admin/api/v1/notifications/{outbox_id}/resend": ("POST", "/admin/api/v1/notifications/999999/resend", None),
    "POST /admin/api/v1/leads/{lead_id}/reveal-phone": ("POST", "/admin/api/v1/leads/999999/reveal-phone", None),
    "GET /admin/api/v1/contracts": ("GET", "/admin/api/v1/contracts", None),
    "POST /admin/api/v1/contracts": ("POST", "/admin/api/v1/contracts", {"lead_id": 999999, "title": "x", "amount_fen": 1, "installments": [{"amount_fen": 1}]}),
    "POST /admin/api/v1/contracts/{order_id}/installments/{seq}/receive": ("POST", "/admin/api/v1/contracts/999999/installments/1/receive", None),
    "POST /admin/api/v1/contracts/{order_id}/confirm-final": ("POST", "/admin/api/v1/contracts/999999/confirm-final", None),
    "GET /admin/api/v1/partners": ("GET", "/admin/api/v1/partners", None),
    "POST /admin/api/v1/partners": ("POST", "/admin/api/v1/partners", {"name": ""}),
    "POST /admin/api/v1/partners/{partner_id}/payouts": ("POST", "/admin/api/v1/partners/999999/payouts", {}),
    "GET /admin/api/v1/training/courses": ("GET", "/admin/api/v1/training/courses", None),
    "POST /admin/api/v1/training/courses": ("POST", "/admin/api/v1/training/courses", {}),
    "GET /admin/api/v1/feedback": ("GET", "/admin/api/v1/feedback", None),
    "POST /admin/api/v1/feedback/{item_id}/transitions": ("POST", "/admin/api/v1/feedback/999999/transitions", {"action": "start"}),
}


def test_every_named_endpoint_has_a_probe() -> None:
    named = {endpoint for _roles, endpoint, _what in AREAS.values() if endpoint}
    assert named == set(PROBES)


@pytest.mark.parametrize("role", list(StaffRole))
def test_the_matrix_follows_the_admin_api(client: Any, staff_login: Callable[..., dict[str, str]], role: StaffRole) -> None:
    headers = staff_login(role.value)
    for area, (_roles, endpoint, _what) in AREAS.items():
        if not endpoint:
            continue
        method, path, body = PROBES[endpoint]
        response = client.open(path, method=method, json=body, headers=headers)
        api_allows = response.status_code not in (401, 403)
        assert api_allows == allowed(role, area), (area, endpoint, role, response.status_code, response.get_json())


@pytest.mark.parametrize("role", list(StaffRole))
def test_allowed_is_the_rule_authenticate_staff_applies(app: Flask, client: Any, staff_login: Callable[..., dict[str, str]], role: StaffRole) -> None:
    token = staff_login(role.value)["Authorization"].split(" ", 1)[1]
    from server import db

    with app.test_request_context():
        for area in AREAS:
            try:
                authenticate_staff(db.session(), token, roles_for(area))
                passes = True
            except AppError:
                passes = False
            assert passes == allowed(role, area), (area, role)


def test_console_only_areas_belong_to_the_owner() -> None:
    for area, (roles, endpoint, _what) in AREAS.items():
        if not endpoint:
            assert roles == (StaffRole.owner,), area


def test_an_operations_account_cannot_reach_owner_actions(app: Flask, console: Any, make_staff: Any) -> None:
    ops = console("operations")
    for path, data in (
        ("/console/members/1/inviter", {"inviter_id": "2", "reason": "x"}),
        ("/console/settings/shop_name", {"value": "x"}),
        ("/console/staff", {"username": "x-user", "password": "long-enough-pw", "role": "owner"}),
        ("/console/staff/1", {"active": "0"}),
    ):
        response = ops.post(path, data)
        assert response.status_code == 403 and "无权访问" in response.text, path
    finance = console("finance")
    assert finance.get("/console/members").status_code == 403
