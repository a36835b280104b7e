"""The keys WeChat Pay signs v3 answers and notifications with, as merchants hold them in production.

Two kinds, named by the ``Wechatpay-Serial`` header of every signed message:

- **Platform certificates** (平台证书): downloaded from ``GET /v3/certificates``, each sealed with the
  APIv3 key. WeChat rotates them: for a while several serials are valid at once, and a message is
  verified with the certificate its serial names, within that certificate's validity.
- **The WeChat Pay public key** (微信支付公钥), given to new merchants since 2024 and to those who
  switch over: one key configured with its id ``PUB_KEY_ID_…``.

``WECHAT_PAY_V3_VERIFY`` says which the merchant uses: ``certificates``, ``public_key``, or ``both``
during WeChat's switch-over from certificates to the public key, when either may sign.

``PayKeyRing`` holds them. A serial it does not know starts one refresh of the certificate list
(``server.wechat.pay.PayV3.refresh_certificates``): never inside a database transaction, at most once
per ``REFRESH_INTERVAL`` for every worker, with the list shared through the cache (Redis, or this
process without it). Certificates are public, so caching them gives nothing away; nothing here logs
a key, a signature or the APIv3 key.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from server.config import PAY_PUBLIC_KEY_ID_PREFIX as PUBLIC_KEY_ID_PREFIX
from server.config import PAY_VERIFY_MODES as VERIFY_MODES

#: Seconds between two downloads of the certificate list, whatever asks for them.
REFRESH_INTERVAL = 60
#: How long a downloaded list is shared through the cache (WeChat asks for a refresh within 12 hours).
CACHE_SECONDS = 12 * 3600


def normal_serial(serial: str) -> str:
    """A certificate serial as WeChat writes it: hexadecimal capitals."""
    return serial.strip().upper()


def certificate_serial(certificate: x509.Certificate) -> str:
    return f"{certificate.serial_number:X}"


@dataclass(frozen=True)
class PlatformCertificate:
    """One platform certificate: its serial, its key and when WeChat says it is valid (epoch seconds)."""

    serial: str
    public_key: rsa.RSAPublicKey
    effective: float
    expires: float
    #: The certificate in PEM; None for a bare public key configured as a pinned certificate.
    pem: str | None = None

    def valid_at(self, now: float) -> bool:
        return self.effective <= now <= self.expires

    def as_cached(self) -> dict[str, Any]:
        return {"serial": self.serial, "pem": self.pem, "effective": self.effective, "expires": self.expires}

    @classmethod
    def from_cached(cls, value: Mapping[str, Any]) -> PlatformCertificate:
        return certificate_from_pem(str(value["pem"]), effective=float(value["effective"]), expires=float(value["expires"]))


def certificate_from_pem(pem: str, *, effective: float | None = None, expires: float | None = None, serial: str | None = None) -> PlatformCertificate:
    """A platform certificate from its PEM, valid within both its own dates and WeChat's (when given).

    ValueError when it is not an RSA certificate or its serial is not ``serial``.
    """
    certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the platform certificate's key is not RSA")
    own = certificate_serial(certificate)
    if serial is not None and int(normal_serial(serial), 16) != certificate.serial_number:
        raise ValueError("serial_no does not name the certificate it comes with")
    start = certificate.not_valid_before_utc.timestamp()
    end = certificate.not_valid_after_utc.timestamp()
    return PlatformCertificate(
        serial=normal_serial(serial) if serial else own,
        public_key=key,
        effective=max(start, effective) if effective is not None else start,
        expires=min(end, expires) if expires is not None else end,
        pem=pem,
    )


def pinned_key(serial: str, public_key: rsa.RSAPublicKey, certificate: x509.Certificate | None) -> PlatformCertificate:
    """A platform key configured by hand (``WECHAT_PAY_PLATFORM_PUBLIC_KEY``): a certificate keeps its dates,
    a bare public key is valid until a downloaded list says otherwise."""
    if certificate is not None:
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
        return certificate_from_pem(pem, serial=serial)
    return PlatformCertificate(normal_serial(serial), public_key, 0.0, float("inf"))


def rfc3339_seconds(value: Any) -> float:
    """An RFC 3339 time of WeChat's (``2026-12-02T12:00:00+08:00``) as epoch seconds; ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError("not a time")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("a time without its offset")
    return parsed.timestamp()


class PayKeyRing:
    """The keys a v3 merchant verifies WeChat Pay with, by ``Wechatpay-Serial``; safe across threads."""

    def __init__(
        self,
        mode: str,
        *,
        certificates: Iterable[PlatformCertificate] = (),
        public_key: rsa.RSAPublicKey | None = None,
        public_key_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode not in VERIFY_MODES:
            raise ValueError(f"WECHAT_PAY_V3_VERIFY must be one of {', '.join(VERIFY_MODES)}")
        if mode in ("public_key", "both"):
            if public_key is None or not public_key_id:
                raise ValueError("the WeChat Pay public key mode needs WECHAT_PAY_PUBLIC_KEY and WECHAT_PAY_PUBLIC_KEY_ID")
            if not public_key_id.startswith(PUBLIC_KEY_ID_PREFIX):
                raise ValueError(f"WECHAT_PAY_PUBLIC_KEY_ID starts with {PUBLIC_KEY_ID_PREFIX}")
        self.mode = mode
        self.public_key = public_key if mode != "certificates" else None
        self.public_key_id = public_key_id if mode != "certificates" else None
        self.clock = clock
        self._guard = threading.Lock()
        self._certificates: dict[str, PlatformCertificate] = {}
        #: Monotonic time of the latest download this process started; a download waits for the one before.
        self.last_download: float | None = None
        self.download_lock = threading.Lock()
        self.merge(certificates)

    @property
    def uses_certificates(self) -> bool:
        return self.mode in ("certificates", "both")

    def merge(self, certificates: Iterable[PlatformCertificate]) -> None:
        """Take ``certificates`` in, each replacing what was held under its serial (a download knows best)."""
        with self._guard:
            for certificate in certificates:
                self._certificates[certificate.serial] = certificate

    def certificates(self) -> list[PlatformCertificate]:
        with self._guard:
            return sorted(self._certificates.values(), key=lambda c: c.expires)

    def lookup(self, serial: str) -> tuple[rsa.RSAPublicKey | None, str | None]:
        """The key ``serial`` names and None, or None and why it may not be used; (None, None) when unknown."""
        if self.public_key is not None and serial == self.public_key_id:
            return self.public_key, None
        if not self.uses_certificates:
            return None, None
        with self._guard:
            certificate = self._certificates.get(normal_serial(serial))
        if certificate is None:
            return None, None
        now = self.clock()
        if now > certificate.expires:
            return None, "Wechatpay-Serial names a platform certificate that has expired"
        if now < certificate.effective:
            return None, "Wechatpay-Serial names a platform certificate not yet in force"
        return certificate.public_key, None

    def should_refresh(self, serial: str) -> bool:
        """Whether an unknown ``serial`` could be a platform certificate that a download would bring."""
        return self.uses_certificates and not serial.startswith(PUBLIC_KEY_ID_PREFIX) and self.lookup(serial) == (None, None)

    def encryption_key(self) -> tuple[str, rsa.RSAPublicKey] | None:
        """What sensitive fields are sealed with and the serial sent with them: the public key when held, else
        the platform certificate in force that expires last (WeChat's advice during a rotation)."""
        if self.public_key is not None and self.public_key_id:
            return self.public_key_id, self.public_key
        now = self.clock()
        valid = [c for c in self.certificates() if c.valid_at(now)]
        if not valid:
            return None
        newest = max(valid, key=lambda c: (c.expires, c.effective))
        return newest.serial, newest.public_key
