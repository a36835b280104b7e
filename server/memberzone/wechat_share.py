"""WeChat's share menu and the way back to the mini-program, on every zone page a member sees.

Each GET of a signed-in member's page (``routes.zone_view``) gathers, before the view runs: the
``wx.config`` of the page's own URL, what the share menus send (the member's share link, the zone's
``h5_link`` scene, and their Moments poster as the picture once one is drawn) and the URL Link that
opens the mini-program with that scene. ``memberzone/base.html`` loads WeChat's JS-SDK (the one script
file the page's Content-Security-Policy allows besides its own nonce) and sets both share menus in
``wx.ready``. WeChat failing costs the page its share menu or its 打开小程序 link, never the page.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import current_app, request, url_for
from sqlalchemy import select

from server import db, html
from server.accounts.models import Member
from server.posters.models import PosterImage
from server.posters.services import variant_for
from server.referral import sharing
from server.referral.errors import SceneQuotaError
from server.referral.models import Channel
from server.referral.services import scene_for_share
from server.settings.services import get_setting

logger = logging.getLogger(__name__)

#: WeChat's JS-SDK, the version whose share calls (updateAppMessageShareData, updateTimelineShareData) the zone uses.
JWEIXIN_URL = "https://res.wx.qq.com/open/js/jweixin-1.6.0.js"
SHARE_DESC = "精选好物 · 会员专享，点开看看"


@dataclass(frozen=True)
class ZoneShare:
    """What a zone page hands WeChat's JS-SDK, and its link back to the mini-program."""

    #: The ``wx.config`` object; None when WeChat gave no ticket (the page shares as a plain link then).
    config: dict[str, Any] | None
    #: The member's share link (``/s/<scene>``), what both share menus send.
    link: str
    title: str
    desc: str
    #: The member's Moments poster, once drawn; WeChat shows its own icon without one.
    image_url: str
    #: The URL Link that opens the mini-program with the member's scene; None when WeChat made none.
    open_link: str | None

    #: The JS-SDK script the page loads.
    jweixin_url: str = JWEIXIN_URL

    def js(self) -> dict[str, Any]:
        """What the page's script reads (``#wx-share``)."""
        return {"config": self.config, "title": self.title, "desc": self.desc, "link": self.link, "imgUrl": self.image_url}


def _poster_url(member_id: int) -> str:
    token = db.session().scalar(
        select(PosterImage.token)
        .where(PosterImage.member_id == member_id, PosterImage.variant == variant_for(Channel.moments_poster))
        .order_by(PosterImage.id.desc())
        .limit(1)
    )
    return current_app.config["PUBLIC_BASE_URL"] + url_for("posters.poster_image", token=token) if token else ""


def zone_share(member: Member) -> ZoneShare | None:
    """The share menu and mini-program link of the page being requested, for ``member``; None when the
    member may not have a share link today (their daily quota of new scenes is spent).

    Commits early, by design: the member's share scene is kept and no transaction is open while
    WeChat gives the JS-SDK ticket and the mini-program link (both cached for every worker).
    """
    sess = db.session()
    try:
        scene = scene_for_share(sess, member.id, Channel.h5_link)
    except SceneQuotaError:
        sess.rollback()
        logger.warning("member zone page shown without its share menu: member %s has no share scene", member.id)
        return None
    shop = str(get_setting(sess, "shop_name"))
    image_url = _poster_url(member.id)
    db.commit()
    config = sharing.wx_config_or_none(sharing.requested_page_url())
    if config is not None:
        html.allow_script_for_request(JWEIXIN_URL)
    links = sharing.scene_links(scene.code)
    return ZoneShare(
        config=config,
        link=f"{current_app.config['PUBLIC_BASE_URL']}/s/{scene.code}",
        title=f"{member.nickname or '好友'}邀请你逛逛「{shop}」",
        desc=SHARE_DESC,
        image_url=image_url,
        open_link=links.url_link if links else None,
    )
