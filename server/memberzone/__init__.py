"""The official account's member zone (会员专区) at ``/h5/member``: a member centre in WeChat's in-app browser.

What the account's menu opens (seed 003: 底部栏设置会员专区). The visitor is signed in through the
account's web OAuth (``session``): a signed cookie holds their unionid, and the pages show the
mini-program member behind it: points and entries, statements, the orders they brought, their
team and recruits, their poster and share link, materials, the redemption shop, and what other
packages add.

Adding a page: a module here that imports ``bp`` from ``routes`` and decorates its views with
``zone_view`` (which hands the view the signed-in member, or sends the browser through OAuth);
a template that extends ``memberzone/base.html`` and renders with ``routes.page``; an entry in
``routes.SECTIONS`` if the home page should link to it; the module's name in ``init_app`` below.
Forms post with ``{{ form_token() }}`` in a hidden ``form_token`` field; ``zone_view`` checks it on
every POST.
"""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from server.memberzone import routes
    # The page modules add their routes to routes.bp as they load, before it is registered below.
    from server.memberzone import points_pages, programme_pages, share_pages, team_pages  # noqa: F401

    app.register_blueprint(routes.bp)
