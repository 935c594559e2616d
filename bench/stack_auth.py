"""The stack's secrets, certificate and client environment for ``bench stack up --auth`` (issue 39).

Everything lives under ``<root>/secrets/`` (a 0700 folder, each file 0600), generated once and reused by later
``up`` calls: the MLflow admin's password (``admin-password``), the Flask secret key of MLflow's basic-auth app
(``flask-secret-key``), the PostgreSQL role's scram password (``pg-password``, and the same as a libpq
``pgpass`` file that the server and clients name with ``PGPASSFILE``), Ray's token (``ray-token``), the auth
app's config (``basic_auth.ini``, no secret in it) and, unless one is given, a self-signed TLS certificate
(``tls-cert.pem``, ``tls-key.pem``). No secret is ever put on a command line: services get them through their
environment or these files.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError

ADMIN_USER = "admin"
"""The MLflow basic-auth admin that clients log in as (``MLFLOW_TRACKING_USERNAME``)."""
LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")
CERT_DAYS = 825
"""How long a generated certificate is valid (days); delete ``tls-*.pem`` to make a new one."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is this machine only: reachable from no other."""
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_names(host: str) -> list[str]:
    """The names and addresses clients may use for a server listening on ``host`` (the certificate's SANs and
    the server's allowed Host headers): ``host`` itself unless a wildcard, this machine's names, and loopback."""
    names = [] if host in WILDCARD else [host]
    if host in WILDCARD or not is_loopback(host):
        names += [socket.gethostname(), socket.getfqdn()]
    return list(dict.fromkeys([*names, "localhost", "127.0.0.1"]))


def client_host(host: str) -> str:
    """The name clients on other machines use for a server listening on ``host`` (a wildcard: our FQDN)."""
    return socket.getfqdn() if host in WILDCARD else host


def _write_secret(path: Path, text: str) -> None:
    """Write ``text`` to a new file that only its owner can read (0600 from the start, never wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


@dataclass(frozen=True)
class StackSecrets:
    """The files of ``<root>/secrets`` (see the module docstring); :meth:`ensure` creates what is missing."""

    folder: Path

    @property
    def admin_password(self) -> Path:
        return self.folder / "admin-password"

    @property
    def flask_secret_key(self) -> Path:
        return self.folder / "flask-secret-key"

    @property
    def pg_password(self) -> Path:
        return self.folder / "pg-password"

    @property
    def pgpass(self) -> Path:
        return self.folder / "pgpass"

    @property
    def ray_token(self) -> Path:
        return self.folder / "ray-token"

    @property
    def auth_config(self) -> Path:
        return self.folder / "basic_auth.ini"

    @property
    def tls_cert(self) -> Path:
        return self.folder / "tls-cert.pem"

    @property
    def tls_key(self) -> Path:
        return self.folder / "tls-key.pem"

    def ensure(self, host: str, pg_exists: bool, own_cert: bool) -> None:
        """Generate each missing secret (and the certificate for ``host`` unless ``own_cert``); a PostgreSQL
        cluster that exists already but whose password file is gone is an error (its password is unknown)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        if pg_exists and not self.pg_password.is_file():
            raise BenchError(f"the stack's PostgreSQL was made with a password that is no longer in {self.folder}",
                             path=self.pg_password, fix="restore the file, or delete the stack's pg folder (its "
                             "runs!) to start afresh")
        for path, make in ((self.admin_password, lambda: secrets.token_urlsafe(24)),
                           (self.flask_secret_key, lambda: secrets.token_hex(32)),
                           (self.pg_password, lambda: secrets.token_urlsafe(24)),
                           (self.ray_token, lambda: secrets.token_hex(32))):  # Ray's own token format
            if not path.is_file():
                _write_secret(path, make())
        _write_secret(self.pgpass, f"127.0.0.1:*:*:*:{self.pg_password.read_text().strip()}\n")
        if not own_cert and not (self.tls_cert.is_file() and self.tls_key.is_file()):
            make_certificate(self.tls_cert, self.tls_key, host_names(host))

    def read(self, path: Path) -> str:
        return path.read_text().strip()


def make_certificate(cert: Path, key: Path, names: list[str]) -> None:
    """A self-signed TLS certificate (EC P-256, ``CERT_DAYS`` days) for ``names`` (DNS names and IP addresses
    as subject alternative names), with ``cryptography`` when installed, else the ``openssl`` command."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        _openssl_certificate(cert, key, names)
        return
    private = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(private.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private.public_key()), critical=False)
        .sign(private, hashes.SHA256())
    )
    _write_secret(key, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode())
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    cert.chmod(0o644)  # public: clients copy it to verify the server


def _openssl_certificate(cert: Path, key: Path, names: list[str]) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BenchError("neither the cryptography package nor the openssl command is installed, so no TLS "
                         "certificate can be made", fix="pip install cryptography, or pass --tls-cert/--tls-key")
    alt = ",".join(f"IP:{n}" if _is_ip(n) else f"DNS:{n}" for n in names)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", str(CERT_DAYS), "-subj", f"/CN={names[0]}",
                    "-addext", f"subjectAltName={alt}"], check=True, capture_output=True)
    key.chmod(0o600)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


AUTH_CACHE_TTL_S = 60
"""Seconds a server worker trusts a checked credential (MLflow basic-auth's ``auth_cache_ttl_seconds``)."""


def write_auth_config(path: Path, database_uri: str) -> None:
    """MLflow basic-auth's ini (``MLFLOW_AUTH_CONFIG_PATH``): users in ``database_uri`` (the stack's
    PostgreSQL; its password comes from ``PGPASSFILE``), nobody may do anything unless granted (the admin may
    do all), the admin's password from ``MLFLOW_AUTH_ADMIN_PASSWORD`` on first start. A checked credential is
    cached for ``AUTH_CACHE_TTL_S`` in each server worker: without it every request pays a deliberately slow
    password hash (scrypt, 0.15 s of one core here), which capped the server near 1.6 requests/s under load; the
    price is that a password changed or a user deleted may still be accepted by the other worker for that long."""
    _write_secret(path, "[mlflow]\n"
                        "default_permission = NO_PERMISSIONS\n"
                        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n"
                        f"database_uri = {database_uri}\n"
                        f"admin_username = {ADMIN_USER}\n"
                        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
