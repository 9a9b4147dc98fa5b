"""The `oidc` fixture: node's oidc-provider (npm) on loopback, over real TLS made by trustme.

It installs the pinned oidc-provider with `npm install --prefix` into `.oidc-provider/` (or
`$RENEWAUTH_OIDC_PREFIX`) unless it is there already (.ci/run installs it first), makes a CA,
the server's certificate, a CA-issued and a self-signed client certificate and the client
keys, writes the configuration tests/oidc_server.mjs reads, starts node and yields what the
tests need. Without node or npm the fixture skips, which fails under CI=true (conftest.py).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

OIDC_PROVIDER = "oidc-provider@9.13.3"  # pinned: the version the suite was written against
LIFETIME = 3  # seconds an access token lives: several lifetimes pass in every hammer test
SECRET = "oidc-client-secret-with-enough-entropy-for-hs256"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
REALM_PATH = "/realms/renewauth"  # a second issuer, laid out as a Keycloak realm
SERVER = pathlib.Path(__file__).with_name("oidc_server.mjs")
ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Oidc:
    """What the tests need from the running server."""

    issuer: str
    mtls_port: int
    ca: str  # the CA bundle (PEM) that signed every certificate here
    tls_cert: str  # a CA-issued client certificate and its key, one PEM file
    self_signed_cert: tuple[str, str]  # (certfile, keyfile) of a self-signed certificate
    # The private_key_jwt clients' RSA key (PEM) and EC key (a private JWK), the service
    # account's EC key for the JWT bearer grant (PEM): never shown, even by pytest.
    rsa_pem: str = field(repr=False)
    ec_jwk: dict[str, Any] = field(repr=False)
    bearer_pem: str = field(repr=False)

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/token"

    @property
    def realm(self) -> str:
        """The Keycloak-shaped issuer: `{server}/realms/renewauth`."""
        return f"{self.issuer}{REALM_PATH}"

    @property
    def api(self) -> str:
        return f"{self.issuer}/api/hello"


def npm_prefix() -> pathlib.Path:
    """Where oidc-provider is installed, installing it with npm if it is not there yet."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the oidc-provider tests")
    prefix = pathlib.Path(os.environ.get("RENEWAUTH_OIDC_PREFIX", ROOT / ".oidc-provider"))
    installed = prefix / "node_modules" / "oidc-provider" / "package.json"
    wanted = OIDC_PROVIDER.rpartition("@")[2]
    if not installed.exists() or json.loads(installed.read_text())["version"] != wanted:
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), OIDC_PROVIDER],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return prefix


def _public_jwk(key: Any, **extra: Any) -> dict[str, Any]:
    import jwt

    if hasattr(key, "curve"):
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    else:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, **extra}


def pem(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _self_signed(directory: pathlib.Path) -> tuple[tuple[str, str], dict[str, Any]]:
    """A self-signed client certificate, its files and the JWK (with x5c) to register."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "renewauth-self-signed")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "self-signed.pem", directory / "self-signed.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_text(pem(key))
    der = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    return (str(cert_file), str(key_file)), _public_jwk(key, x5c=[der])


def _client(client_id: str, method: str, **metadata: Any) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "grant_types": ["client_credentials"],
        "redirect_uris": [],
        "response_types": [],
        "token_endpoint_auth_method": method,
        "scope": "api",
        **metadata,
    }


def start_oidc(directory: pathlib.Path) -> Iterator[Oidc]:
    """Generate the credentials, start the server, yield, stop it."""
    prefix = npm_prefix()
    trustme = pytest.importorskip("trustme", reason="trustme is in the test extra")
    pytest.importorskip("jwt", reason="PyJWT is in the test extra")
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    client = ca.issue_cert("tls-client.renewauth.test", common_name="renewauth-tls-client")
    client.private_key_and_cert_chain_pem.write_to_path(str(directory / "tls-client.pem"))
    self_signed, self_signed_jwk = _self_signed(directory)

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    bearer_key = ec.generate_private_key(ec.SECP256R1())
    import jwt

    ec_jwk = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key)), "kid": "ec-1"}

    clients = [
        _client("basic", "client_secret_basic", client_secret=SECRET),
        _client("post", "client_secret_post", client_secret=SECRET),
        _client("secret-jwt", "client_secret_jwt", client_secret=SECRET),
        _client("rsa-jwt", "private_key_jwt", jwks={"keys": [_public_jwk(rsa_key)]}),
        _client(
            "ec-jwt",
            "private_key_jwt",
            jwks={"keys": [_public_jwk(ec_key, kid="ec-1"), _public_jwk(rsa_key, kid="rsa-2")]},
        ),
        _client(
            "tls",
            "tls_client_auth",
            tls_client_auth_subject_dn="CN=renewauth-tls-client",
            use_mtls_endpoint_aliases=True,
        ),
        _client(
            "self-signed",
            "self_signed_tls_client_auth",
            jwks={"keys": [self_signed_jwk]},
            use_mtls_endpoint_aliases=True,
        ),
        _client(
            "service-account",
            "none",
            grant_types=[JWT_BEARER],
            jwks={"keys": [_public_jwk(bearer_key)]},
        ),
        _client("dpop", "client_secret_basic", client_secret=SECRET, dpop_bound_access_tokens=True),
        _client("dpop-less", "client_secret_basic", client_secret=SECRET),
    ]
    config = {
        "tls": {
            "key": str(directory / "server.key"),
            "cert": str(directory / "server.pem"),
            "ca": str(directory / "ca.pem"),
        },
        "clients": clients,
        "realm": {
            "path": REALM_PATH,
            "clients": [
                _client("kc-rsa-jwt", "private_key_jwt", jwks={"keys": [_public_jwk(rsa_key)]}),
                _client("kc-secret-jwt", "client_secret_jwt", client_secret=SECRET),
                _client(
                    "kc-tls",
                    "tls_client_auth",
                    tls_client_auth_subject_dn="CN=renewauth-tls-client",
                ),
            ],
        },
        "lifetime": LIFETIME,
    }
    (directory / "config.json").write_text(json.dumps(config))
    script = prefix / SERVER.name
    shutil.copyfile(SERVER, script)  # imports resolve from the directory node_modules is in
    process = subprocess.Popen(
        [str(shutil.which("node")), str(script), str(directory / "config.json")],
        cwd=prefix,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=10)
        assert process.stderr is not None
        pytest.fail(f"oidc-provider did not start: {process.stderr.read()[-2000:]}")
    ports = json.loads(line)
    try:
        yield Oidc(
            issuer=f"https://127.0.0.1:{ports['port']}",
            mtls_port=ports["mtls_port"],
            ca=str(directory / "ca.pem"),
            tls_cert=str(directory / "tls-client.pem"),
            self_signed_cert=self_signed,
            rsa_pem=pem(rsa_key),
            ec_jwk=ec_jwk,
            bearer_pem=pem(bearer_key),
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
