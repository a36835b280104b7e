"""Security headers for the HTML the server sends (the H5 landing page and member zone).

Every HTML response gets a Content-Security-Policy that allows only this origin, the image
hosts the adapters register (the official account's QR images), the inline ``<style>`` and
``<script>`` blocks that carry the request's nonce, and a script file a page asks for by its exact URL
(``allow_script_for_request``: WeChat's JS-SDK on the member zone's pages); it may not be framed, and it sends no
referrer (page URLs hold scene codes). Every response is ``nosniff``.
"""
from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g

#: Sent with every HTML response; the CSP is built per request around its nonce.
HTML_HEADERS = {
    "Referrer-Policy": "no-referrer",
    # For browsers (and in-app web views) that predate frame-ancestors.
    "X-Frame-Options": "DENY",
}


def csp_nonce() -> str:
    """This request's nonce for inline ``<style>`` and ``<script>`` blocks (``nonce="{{ csp_nonce() }}"``)."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


def allow_images_from(app: Flask, url: str) -> None:
    """Let HTML pages show images from the origin of ``url`` (e.g. WeChat's QR image host)."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        app.extensions.setdefault("csp_image_origins", set()).add(f"{parts.scheme}://{parts.netloc}")


def allow_script_for_request(url: str) -> None:
    """Let this request's page load the script at exactly ``url`` (WeChat's JS-SDK on the member zone's pages)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment or not parts.path.endswith(".js"):
        raise ValueError("only an https URL of one script file may be allowed")
    g.setdefault("csp_script_sources", []).append(url)


def request_script_sources() -> tuple[str, ...]:
    """The script files this request's page may load besides its nonce-tagged blocks (``allow_script_for_request``)."""
    return tuple(g.get("csp_script_sources", ()))


def content_security_policy(nonce: str, image_origins: set[str], script_origins: tuple[str, ...] = ()) -> str:
    images = " ".join(["'self'", *sorted(image_origins)])
    scripts = " ".join([f"'nonce-{nonce}'", *script_origins])
    return (
        f"default-src 'none'; script-src {scripts}; style-src 'nonce-{nonce}'; img-src {images}; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


def override_html_headers(headers: dict[str, str]) -> None:
    """Send this request's HTML with ``headers`` in place of the defaults of the same names (the
    console's own Content-Security-Policy, for instance)."""
    g.html_header_overrides = headers


def image_origins() -> set[str]:
    """The image hosts the adapters registered (see ``allow_images_from``)."""
    return set(current_app.extensions.get("csp_image_origins", set()))


def _secure(response: Response) -> Response:
    response.headers["X-Content-Type-Options"] = "nosniff"
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = content_security_policy(csp_nonce(), image_origins(), request_script_sources())
        response.headers.update(HTML_HEADERS)
        response.headers.update(g.get("html_header_overrides", {}))
    return response


def init_app(app: Flask) -> None:
    app.after_request(_secure)
    app.jinja_env.globals["csp_nonce"] = csp_nonce
