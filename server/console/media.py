"""Images staff upload (materials' pictures and covers), checked, re-encoded and kept in ``MEDIA_DIR``.

An upload must be a PNG or JPEG by its content (not its name or declared type), at most
``MAX_BYTES`` and ``render.MAX_SOURCE_PIXELS`` pixels; a decompression bomb is refused before it is
decoded. The image is re-encoded with Pillow, so no metadata or trailing data survives, and stored
under its content hash, so the same picture is kept once and a stored file never changes: it is
served under ``/media/<hash>.<ext>`` and may be cached for good. The directory can later be
replaced by object storage (a bucket behind the same URLs) without changing the models, which hold
only the URL.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import warnings
from pathlib import Path

from flask import Blueprint, abort, current_app, send_from_directory, url_for
from PIL import Image
from werkzeug.datastructures import FileStorage
from werkzeug.wrappers import Response

from server.posters import render

bp = Blueprint("media", __name__, url_prefix="/media")

MAX_BYTES = 1024 * 1024
NAME_RE = re.compile(r"[0-9a-f]{32}\.(?:png|jpg)")


class ImageRefusedError(ValueError):
    """Why an upload is not stored, in Chinese for the form."""


def media_dir() -> Path:
    return Path(current_app.config["MEDIA_DIR"])


def checked_image(upload: FileStorage) -> tuple[bytes, str]:
    """The upload re-encoded, and its extension; ImageRefusedError if it is not a small PNG or JPEG."""
    raw = upload.stream.read(MAX_BYTES + 1)
    if not raw:
        raise ImageRefusedError("文件是空的。")
    if len(raw) > MAX_BYTES:
        raise ImageRefusedError(f"图片不能超过 {MAX_BYTES // 1024} KB。")
    try:
        with warnings.catch_warnings():
            # Pillow only warns below twice its bomb limit; here any bomb is refused.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = render.decode_image(raw)
    except Exception:  # Pillow raises many types for a file that is not an image
        raise ImageRefusedError(f"只接受 PNG 或 JPEG 图片，且不超过 {render.MAX_SOURCE_PIXELS:,} 像素。") from None
    return render.reencode(image)


def store_image(upload: FileStorage) -> str:
    """Check, re-encode and keep an uploaded image; its public URL. ImageRefusedError if refused."""
    data, ext = checked_image(upload)
    name = f"{hashlib.sha256(data).hexdigest()[:32]}.{ext}"
    folder = media_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if not target.exists():
        # Written aside and renamed, so a reader never sees half a file.
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".part")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, target)
    return current_app.config["PUBLIC_BASE_URL"] + url_for("media.media_file", name=name)


@bp.get("/<name>")
def media_file(name: str) -> Response:
    """A stored image; its name is its content hash, so it never changes."""
    if not NAME_RE.fullmatch(name):
        abort(404)
    response = send_from_directory(media_dir(), name, max_age=365 * 24 * 3600)
    response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
