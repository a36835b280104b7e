"""The domain events: what a lower package announces and a higher one may react to.

A package sends an event where the thing happens; packages above it connect their handlers in
their own ``init_app``, so nothing imports upward. Handlers run synchronously, in the sender's
session and unit of work, in the order they were connected: a handler that raises fails the
unit of work like any other error. Each event's sender is the session; its keyword arguments
are listed with it.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableSet
from typing import Any

from blinker import Namespace, NamedSignal


class _ConnectionOrder(MutableSet[Any]):
    """A set that iterates in insertion order: blinker's own ``set`` would call receivers in an order
    that depends on their memory addresses, not on the order they were connected."""

    def __init__(self, items: Iterable[Any] = ()) -> None:
        self._items = dict.fromkeys(items)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Any) -> None:
        self._items[item] = None

    def discard(self, item: Any) -> None:
        self._items.pop(item, None)

    def copy(self) -> _ConnectionOrder:
        return _ConnectionOrder(self._items)


class _OrderedSignal(NamedSignal):
    set_class = _ConnectionOrder  # type: ignore[assignment]  # blinker types it as the builtin set


class _Events(Namespace):
    def signal(self, name: str, doc: str | None = None) -> NamedSignal:
        return self.setdefault(name, _OrderedSignal(name, doc))


_events = _Events()

#: An order moved to a new status (``order``, ``status``): after the conditional UPDATE and its timeline event.
order_status_changed = _events.signal("order-status-changed")

#: Operations marked a lead valid (``lead``): a sales lead with a contact and a stated need.
lead_marked_valid = _events.signal("lead-marked-valid")

#: A member was bound to a new inviter (``member``, ``inviter_id``, ``channel``: the scene's channel,
#: ``scene_code``): after the binding row and its touch event, before the unit of work commits.
member_bound = _events.signal("member-bound")

#: Staff approved a distributor, or the merchant appointed one (``distributor``): after the status change and its audit entry.
distributor_approved = _events.signal("distributor-approved")

#: A member changed what others see of them, their nickname or avatar (``member``).
member_profile_changed = _events.signal("member-profile-changed")

#: An order's reward reached a member as pending points (``reward``: the OrderReward row, ``order``): once per reward.
points_credited = _events.signal("points-credited")

#: A settlement run moved members' matured points to available (``run``, ``statements``: a list of
#: ``points.settlement.Settled``, one per member): once per run, after all its statement rows.
points_settled = _events.signal("points-settled")

#: A refund ended (``refund``, ``order``): succeeded, failed or rejected, after its amounts and the order's status.
refund_ended = _events.signal("refund-ended")

#: Staff or the rules decided a distributor application or changed a distributor's standing
#: (``distributor``, ``action``: approve, reject, freeze, unfreeze or disable): after the audit entry.
distributor_decided = _events.signal("distributor-decided")

#: Staff fulfilled a redemption (``redemption``): placed → fulfilled, audited.
redemption_fulfilled = _events.signal("redemption-fulfilled")

#: A user followed or left the official account (``oa_openid``: the account's openid of them, ``unionid``:
#: where WeChat gave it, else None, ``following``): from the account's callback.
oa_follow_changed = _events.signal("oa-follow-changed")

#: A member signed in to the mini-program (``member``, ``client_address``, ``created``: a first sign-in):
#: after their bearer token was issued, so the session with its client address is there to read.
member_signed_in = _events.signal("member-signed-in")

#: A lead was opened (``lead``): an arrival or contact details left, after its row and timeline event.
lead_opened = _events.signal("lead-opened")

#: A member placed a redemption (``redemption``): after the points were spent.
redemption_placed = _events.signal("redemption-placed")

#: A member was issued a new scene to share (``scene``): after its row. ``issued_since``, where the sender
#: counted them, is ``(moment, n)``: the member's scenes created since ``moment``, this one included; else None.
scene_issued = _events.signal("scene-issued")
