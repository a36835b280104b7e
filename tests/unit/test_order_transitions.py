"""The order state machine's table, checked as data: no database needed."""
from __future__ import annotations

from server.orders.models import OrderStatus
from server.orders.services import TRANSITIONS

S = OrderStatus


def reachable(start: OrderStatus) -> set[OrderStatus]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_status_has_a_row_and_every_move_names_a_status() -> None:
    assert set(TRANSITIONS) == set(OrderStatus)
    assert all(targets <= set(OrderStatus) for targets in TRANSITIONS.values())


def test_every_status_is_reachable_from_created() -> None:
    assert reachable(S.created) == set(OrderStatus)


def test_refunded_is_the_only_end() -> None:
    assert [status for status, targets in TRANSITIONS.items() if not targets] == [S.refunded]


def test_no_status_moves_to_itself_and_nothing_goes_back_to_created() -> None:
    assert all(status not in targets for status, targets in TRANSITIONS.items())
    assert all(S.created not in targets for targets in TRANSITIONS.values())


def test_money_can_only_come_back_through_refunding() -> None:
    into_refunded = {status for status, targets in TRANSITIONS.items() if S.refunded in targets}
    assert into_refunded == {S.refunding}
    # Once paid, every status can start a refund except those still going through one or done.
    assert {status for status, targets in TRANSITIONS.items() if S.refunding in targets} == {S.paid, S.shipped, S.received, S.completed}


def test_a_refund_returns_to_any_status_it_may_have_interrupted() -> None:
    interrupted = {status for status, targets in TRANSITIONS.items() if S.refunding in targets}
    assert interrupted <= TRANSITIONS[S.refunding]


def test_an_unpaid_order_is_paid_or_closed_and_a_late_payment_is_honoured() -> None:
    assert TRANSITIONS[S.created] == {S.paid, S.closed}
    assert TRANSITIONS[S.closed] == {S.paid}
