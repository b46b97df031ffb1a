"""``verify-full`` really verifies: a throwaway PostgreSQL serving TLS with a certificate for
``localhost`` from a test CA, reached through ``myi.db.connect`` with ``DB_HOST`` settings (as a
deployed function connects). With the test CA as the bundle it connects over TLS; with the Amazon
RDS bundle it is refused, and so is a certificate naming another host.

The embedded PostgreSQL of the test suite (pgserver) is built without OpenSSL, so this uses a
PostgreSQL of the machine (``initdb`` on the PATH, or Debian's ``/usr/lib/postgresql/*/bin``) and is
skipped when none with SSL support is found. It costs about a second (initdb without fsync)."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devtools import embedded
from myi import db
from myi.settings import Settings, get_settings


@dataclass
class TlsPostgres:
    port: int
    ca: Path  # the test CA's certificate (PEM)


def _run(args: list[str], user: str | None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, user=user, capture_output=True, text=True, timeout=60, check=False, **kwargs)


def _bin_dirs() -> list[Path]:
    found = [Path(p).resolve().parent for p in [shutil.which("initdb")] if p]
    found += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return [d for d in dict.fromkeys(found) if (d / "postgres").is_file() and (d / "pg_ctl").is_file()]


def _server_user() -> str | None:
    """PostgreSQL refuses to run as root: then a user it runs as (pgserver's own, else nobody)."""
    if os.geteuid() != 0:
        return None
    for name in ("pgserver", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name).pw_name
    pytest.skip("running as root, with no other user to run PostgreSQL as")


def _chown(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        for p in [path, *path.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)


def _with_ssl(user: str | None, scratch: Path) -> Path | None:
    """The first PostgreSQL of the machine built with OpenSSL (``postgres -C ssl_library``)."""
    probe = scratch / "probe"
    probe.mkdir()
    (probe / "postgresql.conf").write_text("")
    _chown(probe, user)
    for bin_dir in _bin_dirs():
        done = _run([str(bin_dir / "postgres"), "-D", str(probe), "-C", "ssl_library"], user, cwd=scratch)
        if done.returncode == 0 and done.stdout.strip():
            return bin_dir
    return None


def _certificates(folder: Path) -> Path:
    """A test CA and a server certificate for ``localhost`` (only) that it signs; the CA's path."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "MYI test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "server.crt").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (folder / "server.key").chmod(0o600)
    ca_file = folder.parent / "test-ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return ca_file


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[TlsPostgres]:
    user = _server_user()
    scratch = Path(tempfile.mkdtemp(prefix="myi-tls-"))
    try:
        _chown(scratch, user)
        bin_dir = _with_ssl(user, scratch)
        if bin_dir is None:
            pytest.skip("no PostgreSQL built with OpenSSL on this machine (pgserver's is built without)")
        data = scratch / "data"
        done = _run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync"],
            user,
            cwd=scratch,
        )
        assert done.returncode == 0, done.stderr
        ca = _certificates(data)
        _chown(data, user)
        port = embedded.free_port()
        options = (
            f"-c listen_addresses=localhost -p {port} -k {scratch} -c fsync=off "
            "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
        )
        pg_ctl = str(bin_dir / "pg_ctl")
        log = scratch / "server.log"
        done = _run(
            [pg_ctl, "-D", str(data), "-w", "-l", str(log), "-o", options, "start"], user, cwd=scratch
        )
        assert done.returncode == 0, f"{done.stderr}\n{log.read_text() if log.exists() else ''}"
        try:
            yield TlsPostgres(port=port, ca=ca)
        finally:
            _run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], user, cwd=scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def deployed(
    tls_postgres: TlsPostgres, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], Settings]]:
    """Settings as a deployed function has them (IAM authentication: the server trusts every
    connection, so the token is sent and ignored), for the server at ``host``."""

    def make(host: str) -> Settings:
        monkeypatch.delenv("DATABASE_URL", raising=False)
        for name, value in {
            "DB_HOST": host,
            "DB_PORT": str(tls_postgres.port),
            "DB_NAME": "postgres",
            "DB_USER": "postgres",
            "DB_IAM_AUTH": "true",
        }.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        return get_settings()

    yield make
    get_settings.cache_clear()


def test_verify_full_connects_to_a_server_the_bundle_vouches_for(
    tls_postgres: TlsPostgres, deployed: Callable[[str], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "RDS_CA_BUNDLE", tls_postgres.ca)
    with db.connect(deployed("localhost")) as conn:
        assert conn.pgconn.ssl_in_use
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row == (True,)


def test_the_rds_bundle_refuses_a_server_it_does_not_vouch_for(
    tls_postgres: TlsPostgres, deployed: Callable[[str], Settings]
) -> None:
    """The same server with MYI's own bundle (so it is read: an unreadable file fails otherwise)."""
    assert db.RDS_CA_BUNDLE.is_file()
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        db.connect(deployed("localhost"))


def test_verify_full_refuses_a_certificate_that_names_another_host(
    tls_postgres: TlsPostgres, deployed: Callable[[str], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The certificate chains to the trusted CA but names ``localhost``, not ``127.0.0.1``."""
    monkeypatch.setattr(db, "RDS_CA_BUNDLE", tls_postgres.ca)
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        db.connect(deployed(str(ipaddress.ip_address("127.0.0.1"))))
