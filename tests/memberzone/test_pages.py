"""The member zone's pages: what a member sees, signed in through the official account's OAuth."""
from __future__ import annotations

import pytest

PAGES = ["/h5/member", "/h5/member/points", "/h5/member/points?account=pending", "/h5/member/statements", "/h5/member/shop",
         "/h5/member/redemptions", "/h5/member/team", "/h5/member/team?level=indirect", "/h5/member/orders",
         "/h5/member/recruits", "/h5/member/share", "/h5/member/materials", "/h5/member/materials?kind=video",
         "/h5/member/rules", "/h5/member/notices"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_for_a_new_member(zone, path):
    browser, _ = zone("alice")
    page = browser.get(path)
    html = page.get_data(as_text=True)
    assert page.status_code == 200, html[:2000]
    assert page.headers["Cache-Control"] == "no-store"
    assert "会员专区" in html and 'class="tabbar"' in html
