"""The webhook's serving certificate: from files (reloaded when they change) or generated.

Python's ``ssl`` module loads key material only from files, so generated and reloaded
certificates pass through a private temporary directory (mode 0700) that is removed at once.
"""

import asyncio
import ipaddress
import logging
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from temper.errors import InvalidSettingsError
from temper.tls import CertificateAuthority, KeyPair
from webhook.settings import WebhookSettings

log = logging.getLogger(__name__)

CA_COMMON_NAME = "temper-webhook-ca"
SERVING_COMMON_NAME = "temper-webhook"

# (mtime in ns, size, inode) of the certificate and of the key; None for a missing file.
FileStamp = tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]


def new_server_context() -> ssl.SSLContext:
    """Return a TLS server context without a certificate: TLS 1.2 or newer, HTTP/1.1 only."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


def load_key_pair(context: ssl.SSLContext, pair: KeyPair) -> None:
    """Load a PEM certificate chain and key held in memory into ``context``."""
    with tempfile.TemporaryDirectory(prefix="temper-webhook-tls-") as directory:
        cert_path, key_path = pair.write(Path(directory), "serving")
        context.load_cert_chain(cert_path, key_path)


def certificate_serial(cert_pem: bytes) -> int:
    """Return the serial number of the first certificate in a PEM chain."""
    return x509.load_pem_x509_certificate(cert_pem).serial_number


class CertificateReloader:
    """Watches the certificate and key files and swaps them into the live SSLContext.

    OpenSSL copies the certificate into each connection when the handshake starts, so new
    connections get the new certificate and open ones keep the old. A new pair is loaded
    into a scratch context first, because a failed ``load_cert_chain`` on the live context
    could leave it with a certificate whose key is gone. A half-written or mismatched pair
    is logged, and the previous certificate stays in use.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        cert_file: Path,
        key_file: Path,
        interval_seconds: float,
    ) -> None:
        self._context = context
        self._cert_file = cert_file
        self._key_file = key_file
        self._interval_seconds = interval_seconds
        self._stamp = self._read_stamp()
        self.reloads = 0

    def _read_stamp(self) -> FileStamp:
        stamps: list[tuple[int, int, int] | None] = []
        for path in (self._cert_file, self._key_file):
            try:
                status = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((status.st_mtime_ns, status.st_size, status.st_ino))
        return stamps[0], stamps[1]

    def check(self) -> bool:
        """Reload the pair when either file changed since the last check; True on a reload."""
        stamp = self._read_stamp()
        if stamp == self._stamp:
            return False
        # Remember the stamp even when loading fails, so a broken pair is reported once and
        # retried as soon as either file changes again.
        self._stamp = stamp
        try:
            pair = KeyPair(self._cert_file.read_bytes(), self._key_file.read_bytes())
            load_key_pair(new_server_context(), pair)
        except (OSError, ssl.SSLError, ValueError) as error:
            log.error(
                "cannot load the changed serving certificate, keeping the previous one",
                extra={
                    "cert_file": str(self._cert_file),
                    "key_file": str(self._key_file),
                    "error": str(error),
                },
            )
            return False
        load_key_pair(self._context, pair)
        self.reloads += 1
        log.info(
            "serving certificate reloaded",
            extra={"cert_file": str(self._cert_file), "serial": certificate_serial(pair.cert_pem)},
        )
        return True

    async def run(self) -> None:
        """Check the files every interval until cancelled."""
        while True:
            await asyncio.sleep(self._interval_seconds)
            self.check()


@dataclass(frozen=True)
class ServingTls:
    """The server's SSLContext, the CA for ``caBundle`` (None: system trust) and a reloader."""

    context: ssl.SSLContext
    ca_bundle_pem: bytes | None
    reloader: CertificateReloader | None


def _serving_ip_addresses(listen_address: str) -> tuple[str, ...]:
    addresses = ["127.0.0.1"]
    try:
        address = ipaddress.ip_address(listen_address)
    except ValueError:
        return tuple(addresses)
    if not address.is_unspecified and str(address) not in addresses:
        addresses.append(str(address))
    return tuple(addresses)


def build_serving_tls(settings: WebhookSettings) -> ServingTls:
    """Load the configured certificate files, or generate a CA and a serving certificate.

    Raises InvalidSettingsError when the files cannot be read or do not form a key pair.
    """
    context = new_server_context()
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        try:
            context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
            ca_pem = settings.tls_ca_file.read_bytes() if settings.tls_ca_file else None
        except (OSError, ssl.SSLError) as error:
            raise InvalidSettingsError(
                f"cannot load --tls-cert-file {settings.tls_cert_file}, --tls-key-file "
                f"{settings.tls_key_file} or --tls-ca-file {settings.tls_ca_file}: {error}; "
                "pass readable PEM files whose key matches the certificate"
            ) from error
        reloader = CertificateReloader(
            context,
            settings.tls_cert_file,
            settings.tls_key_file,
            settings.tls_reload_interval_seconds,
        )
        return ServingTls(context, ca_pem, reloader)

    authority = CertificateAuthority(CA_COMMON_NAME)
    pair = authority.issue(
        SERVING_COMMON_NAME,
        dns_names=("localhost", *settings.service_dns_names),
        ip_addresses=_serving_ip_addresses(settings.listen_address),
    )
    load_key_pair(context, pair)
    log.info(
        "generated a CA and a serving certificate",
        extra={"dns_names": ["localhost", *settings.service_dns_names]},
    )
    return ServingTls(context, authority.cert_pem, None)
