"""The domain events: what a lower package announces and a higher one may react to.

A package sends an event where the thing happens; packages above it connect their handlers in
their own ``init_app``, so nothing imports upward. Handlers run synchronously, in the sender's
session and unit of work, in the order they were connected: a handler that raises fails the
unit of work like any other error. Each event's sender is the session; its keyword arguments
are listed with it.
"""
from __future__ import annotations

from blinker import Namespace

_events = Namespace()

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

#: A settlement moved a member's matured points to available (``statement``, ``run``): after the statement row.
points_settled = _events.signal("points-settled")

#: A refund ended (``refund``, ``order``): succeeded, failed or rejected, after its amounts and the order's status.
refund_ended = _events.signal("refund-ended")

#: Staff or the rules decided a distributor application or changed a distributor's standing
#: (``distributor``, ``action``: approve, reject, freeze, unfreeze or disable): after the audit entry.
distributor_decided = _events.signal("distributor-decided")

#: Staff fulfilled a redemption (``redemption``): placed → fulfilled, audited.
redemption_fulfilled = _events.signal("redemption-fulfilled")
