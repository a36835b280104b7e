"""Sharing from the zone: the member's poster for Moments, their share link and the materials their
tier may share."""
from __future__ import annotations

import contextlib
from typing import Any

from flask import current_app, request, url_for

from server import db
from server.accounts.models import Member
from server.distribution import services as distribution
from server.distribution.models import MaterialKind
from server.errors import AppError
from server.memberzone.routes import Pager, add_section, bp, page, page_arg, zone_view
from server.posters import services as posters
from server.referral.models import Channel
from server.referral.services import scene_for_share
from server.wechat import miniprogram, official_account


@bp.get("/share")
@zone_view
def share(member: Member) -> Any:
    """The member's Moments poster (drawn once, then cached) and their share link."""
    base = current_app.config["PUBLIC_BASE_URL"]
    sess = db.session()
    share_scene = scene_for_share(sess, member.id, Channel.h5_link)
    poster_url = poster_share_url = None
    try:
        with contextlib.ExitStack() as locks:
            poster = posters.get_poster(
                sess,
                miniprogram(),
                member,
                channel=Channel.moments_poster,
                public_base_url=base,
                locks=locks,
                # Commits early, by design: nothing is held while the avatar host and WeChat answer.
                commit_early=db.commit,
                oa=official_account(),
            )
            # Commits early, by design: before the render lock is released, so a request waiting on it finds the row.
            db.commit()
        poster_url = url_for("posters.poster_image", token=poster.image.token)
        # What a share card carries: WeChat fetches it from our public address.
        poster_share_url = base + poster_url
    except AppError:
        db.session().rollback()
        current_app.logger.warning("member zone shown without the poster: it could not be drawn")
    return page("memberzone/share.html", tab="share", share_url=f"{base}/s/{share_scene.code}", poster_url=poster_url, poster_share_url=poster_share_url)



@bp.get("/materials")
@zone_view
def materials(member: Member) -> Any:
    """The materials the member's tier may see (every member sees the public ones)."""
    kind_arg = request.args.get("kind", "")
    kind = MaterialKind(kind_arg) if kind_arg in MaterialKind.__members__ else None
    pager = Pager(page_arg(), 0)
    rows, total = distribution.visible_materials(db.session(), member.id, kind=kind, offset=pager.offset, limit=pager.size)
    return page(
        "memberzone/materials.html",
        tab="share",
        rows=rows,
        kind=kind.value if kind else "",
        kinds=[kind.value for kind in MaterialKind],
        pager=Pager(pager.page, total),
    )


add_section("memberzone.share", "我的海报", "分享到朋友圈与好友")
add_section("memberzone.materials", "推广素材", "文案、图片与视频")
