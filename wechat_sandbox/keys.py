"""The WeChat Pay key pairs the sandbox plays with: the merchant's (the app signs with its private
key, the sandbox checks with its public one), WeChat's first platform certificate's pair and the
WeChat Pay public key's pair (the sandbox signs, the app checks). Generated once into a directory;
the app in sandbox mode reads the PEM files from there. Certificates the sandbox rotates to later
are generated in memory (``pay_state.PayState.rotate_certificates``).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

#: Fixed serials of the key pairs the sandbox generates; real serials are 40 hex digits too.
SANDBOX_MCH_SERIAL = "5A0D5A4D5B0C0001000000000000000000000A01"
SANDBOX_PLATFORM_SERIAL = "5A0D5A4D5B0C0001000000000000000000000B02"
#: The id of the sandbox's WeChat Pay public key (微信支付公钥); WeChat's are ``PUB_KEY_ID_`` and 28 digits.
SANDBOX_PUBLIC_KEY_ID = "PUB_KEY_ID_0119000001092026120200000000000001"
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

    @property
    def wechatpay_public_key_private(self) -> Path:
        """The private half of the WeChat Pay public key: only the sandbox signs with it."""
        return self.directory / "wechatpay_pub_key_private.pem"

    @property
    def wechatpay_public_key(self) -> Path:
        """What WeChat's merchant platform lets a merchant download as ``pub_key.pem``."""
        return self.directory / "wechatpay_pub_key.pem"

    def complete(self) -> bool:
        paths = (self.merchant_private, self.merchant_public, self.platform_private, self.platform_public)
        return all(p.is_file() for p in paths + (self.wechatpay_public_key_private, self.wechatpay_public_key))


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
    if keys.directory.is_dir():
        # Made before the WeChat Pay public key pair existed: add that pair alone.
        _ensure_public_key_pair(keys)
        return keys
    keys.directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sandbox-pay-", dir=keys.directory.parent))
    try:
        staged = SandboxKeys(staging)
        for private_path, public_path in ((staged.merchant_private, staged.merchant_public), (staged.platform_private, staged.platform_public)):
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write_secret(private_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
            _write_secret(public_path, key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        _ensure_public_key_pair(staged)
        try:
            os.rename(staging, keys.directory)
        except OSError:
            pass  # another process put its keys there first: use those
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keys.complete():
        raise RuntimeError(f"sandbox WeChat Pay keys are incomplete in {keys.directory}; delete it to regenerate")
    return keys


def _ensure_public_key_pair(keys: SandboxKeys) -> None:
    """The WeChat Pay public key pair in ``keys``: the private half linked into place once (the first process
    wins), the public half written from whichever private half won, so the two always agree."""
    if not keys.wechatpay_public_key_private.is_file():
        staged = keys.directory / f".pub-key-{os.getpid()}-{threading.get_ident()}.pem"
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_secret(staged, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        try:
            os.link(staged, keys.wechatpay_public_key_private)
        except FileExistsError:
            pass  # another process linked its key first: use that one
        finally:
            staged.unlink()
    if not keys.wechatpay_public_key.is_file():
        private = serialization.load_pem_private_key(keys.wechatpay_public_key_private.read_bytes(), password=None)
        public = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        staged = keys.directory / f".pub-key-{os.getpid()}-{threading.get_ident()}.pub"
        _write_secret(staged, public)
        os.replace(staged, keys.wechatpay_public_key)


def sandbox_key_dir(config: Mapping[str, Any]) -> Path:
    """The key directory the configuration names (``WECHAT_PAY_SANDBOX_KEY_DIR``)."""
    return Path(config.get("WECHAT_PAY_SANDBOX_KEY_DIR") or DEFAULT_SANDBOX_KEY_DIR)


#: The issuer of the sandbox's platform certificates, as WeChat's are issued by Tenpay's CA.
_ISSUER = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tenpay.com"), x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA (sandbox)")])


@dataclass(frozen=True)
class SandboxCertificate:
    """A platform certificate the sandbox issued: its serial (40 hex digits), key pair, PEM and validity."""

    serial: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    pem: str
    effective: float
    expires: float

    def reissued(self, *, expires: float) -> SandboxCertificate:
        """The same key and serial with another end (the sandbox brings an expiry closer to play a rotation)."""
        return issue_certificate(self.private_key, self.serial, self.effective, expires)


def issue_certificate(private_key: rsa.RSAPrivateKey, serial: str, effective: float, expires: float) -> SandboxCertificate:
    """A platform certificate for ``private_key`` with serial number ``serial`` (hex), valid from ``effective`` to ``expires``."""
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "WeChat Pay sandbox"), x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com sign")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(_ISSUER)
        .public_key(private_key.public_key())
        .serial_number(int(serial, 16))
        .not_valid_before(datetime.fromtimestamp(int(effective), timezone.utc))
        .not_valid_after(datetime.fromtimestamp(int(expires), timezone.utc))
        .sign(private_key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return SandboxCertificate(serial, private_key, pem, float(int(effective)), float(int(expires)))
