"""The WeChat Pay key pairs the sandbox plays with: the merchant's (the app signs with its private
key, the sandbox checks with its public one) and WeChat's platform pair (the sandbox signs, the app
checks). Generated once into a directory; the app in sandbox mode reads the PEM files from there.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

#: Fixed serials of the key pairs the sandbox generates; real serials are 40 hex digits too.
SANDBOX_MCH_SERIAL = "5A0D5A4D5B0C0001000000000000000000000A01"
SANDBOX_PLATFORM_SERIAL = "5A0D5A4D5B0C0001000000000000000000000B02"
#: Where the key pairs live unless ``WECHAT_PAY_SANDBOX_KEY_DIR`` says otherwise: var/ of the checkout.
DEFAULT_SANDBOX_KEY_DIR = Path(__file__).resolve().parent.parent / "var" / "sandbox-pay"


@dataclass(frozen=True)
class SandboxKeys:
    """Where the sandbox's merchant and platform key pairs live (generated once, files 0600)."""

    directory: Path

    @property
    def merchant_private(self) -> Path:
        return self.directory / "merchant_private.pem"

    @property
    def merchant_public(self) -> Path:
        return self.directory / "merchant_public.pem"

    @property
    def platform_private(self) -> Path:
        return self.directory / "platform_private.pem"

    @property
    def platform_public(self) -> Path:
        return self.directory / "platform_public.pem"

    def complete(self) -> bool:
        return all(p.is_file() for p in (self.merchant_private, self.merchant_public, self.platform_private, self.platform_public))


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_sandbox_keys(directory: str | os.PathLike[str]) -> SandboxKeys:
    """The sandbox's key pairs in ``directory``, generated on first use.

    Generated in a private staging directory and renamed into place, so processes starting
    together (test workers, gunicorn workers) all end up with the same keys.
    """
    keys = SandboxKeys(Path(directory))
    if keys.complete():
        return keys
    keys.directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sandbox-pay-", dir=keys.directory.parent))
    try:
        staged = SandboxKeys(staging)
        for private_path, public_path in ((staged.merchant_private, staged.merchant_public), (staged.platform_private, staged.platform_public)):
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write_secret(private_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
            _write_secret(public_path, key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        try:
            os.rename(staging, keys.directory)
        except OSError:
            pass  # another process put its keys there first: use those
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keys.complete():
        raise RuntimeError(f"sandbox WeChat Pay keys are incomplete in {keys.directory}; delete it to regenerate")
    return keys


def sandbox_key_dir(config: Mapping[str, Any]) -> Path:
    """The key directory the configuration names (``WECHAT_PAY_SANDBOX_KEY_DIR``)."""
    return Path(config.get("WECHAT_PAY_SANDBOX_KEY_DIR") or DEFAULT_SANDBOX_KEY_DIR)
