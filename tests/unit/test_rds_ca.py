"""The Amazon RDS CA bundle the functions verify the database with: what it holds, that the pinned
npm package writes exactly it, that it ships with the package, and that a ``DB_HOST`` connection
asks libpq for ``verify-full`` against it (tests/integration/test_db_tls.py shows libpq doing so)."""

from __future__ import annotations

import fnmatch
import json
import shutil
import tomllib
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from devtools import rds_ca
from devtools.paths import REPO
from myi import aws, db
from myi.settings import Settings, get_settings


def certificates() -> list[x509.Certificate]:
    with warnings.catch_warnings():
        # Starfield Services Root Certificate Authority - G2 (an RDS Proxy root, in every browser's
        # trust store) has serial number 0, which RFC 5280 disallows and cryptography warns about;
        # OpenSSL, and so libpq, accepts it.
        warnings.filterwarnings("ignore", "Parsed a serial number which wasn't positive")
        return x509.load_pem_x509_certificates(db.RDS_CA_BUNDLE.read_bytes())


def common_name(cert: x509.Certificate) -> str:
    (attribute,) = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attribute.value)


def valid_now(cert: x509.Certificate) -> bool:
    return cert.not_valid_before_utc <= datetime.now(UTC) <= cert.not_valid_after_utc


def test_the_bundle_holds_certificate_authorities_only_with_roots_valid_for_years() -> None:
    certs = certificates()
    assert db.RDS_CA_BUNDLE == rds_ca.BUNDLE and len(certs) > 100
    for cert in certs:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert constraints.ca, common_name(cert)
    roots = {common_name(c): c for c in certs if c.issuer == c.subject and valid_now(c)}
    assert any(c.not_valid_after_utc.year > 2030 for c in roots.values())
    # What signs a new Aurora instance's certificate by default (rds-ca-rsa2048-g1; MYI's default
    # region), and the root of RDS Proxy's certificates (the scale profile connects through it).
    for name in ("Amazon RDS us-east-1 Root CA RSA2048 G1", "Amazon Root CA 1"):
        assert name in roots and roots[name].not_valid_after_utc.year > 2030, name


def test_the_bundle_is_what_the_pinned_package_writes() -> None:
    pin = json.loads((REPO / "package.json").read_text())["devDependencies"][rds_ca.PACKAGE]
    assert pin == rds_ca.pinned_version() and pin[0].isdigit()  # exact, so the file is reproducible
    assert f"{rds_ca.PACKAGE} {pin}" in db.RDS_CA_BUNDLE.read_text().split("-----BEGIN", 1)[0]
    if shutil.which("node") is None or rds_ca.installed_version() != pin:
        pytest.skip(f"node or node_modules/{rds_ca.PACKAGE} {pin} is missing (make cdk-cli installs it)")
    assert rds_ca.render() == db.RDS_CA_BUNDLE.read_text(), "run make rds-ca"


def test_the_bundle_ships_with_the_package() -> None:
    """The layer copies ``myi/`` whole (tests/infra/test_layer_smoke.py); an installed package has
    it by its package data."""
    with (REPO / "pyproject.toml").open("rb") as fh:
        patterns = tomllib.load(fh)["tool"]["setuptools"]["package-data"]["myi"]
    relative = db.RDS_CA_BUNDLE.relative_to(Path(db.__file__).resolve().parent).as_posix()
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), patterns


@pytest.fixture
def db_host_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Settings]]:
    """Settings of a deployed function (``DB_HOST`` and the rest from the environment)."""

    def make(**env: str) -> Settings:
        monkeypatch.delenv("DATABASE_URL", raising=False)
        for name, value in {"DB_HOST": "myi.cluster-abc.us-east-1.rds.amazonaws.com", **env}.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        return get_settings()

    yield make
    get_settings.cache_clear()


class _Secrets:
    def get_secret_value(self, SecretId: str) -> dict[str, Any]:
        return {"SecretString": json.dumps({"username": "postgres", "password": "from-the-secret"})}


@pytest.mark.parametrize("auth", ["iam", "secret"])
def test_a_db_host_connection_verifies_the_server_against_the_bundle(
    auth: str, db_host_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    if auth == "iam":
        settings = db_host_settings(DB_IAM_AUTH="true", DB_USER="myi_app")
        assert settings.db_iam_auth
    else:
        settings = db_host_settings(DB_SECRET_ARN="arn:aws:secretsmanager:us-east-1:1:secret:db")
        assert settings.db_secret_arn and not settings.db_iam_auth
        monkeypatch.setattr(aws, "client", lambda service, settings=None: _Secrets())
    params = db.conninfo(settings)
    assert params["host"] == settings.db_host
    assert params["sslmode"] == "verify-full"
    assert params["sslrootcert"] == str(db.RDS_CA_BUNDLE)
    assert Path(params["sslrootcert"]).is_absolute() and Path(params["sslrootcert"]).is_file()
    assert params["password"]  # an IAM token, or the secret's password


def test_a_database_url_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local runs and tests name their database by URL; no TLS settings are added to it."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@/myi?host=/tmp")
    get_settings.cache_clear()
    try:
        assert db.conninfo(get_settings()) == {"conninfo": "postgresql://postgres@/myi?host=/tmp"}
    finally:
        get_settings.cache_clear()
