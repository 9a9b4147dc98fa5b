"""Signed JWTs for client assertions (RFC 7523), the JWT bearer grant and DPoP proofs.

The one place that touches the optional JOSE library (PyJWT with cryptography, the
`renewauth[jwt]` extra), imported when a key is loaded, so that `import renewauth` never needs
it. Pure: no I/O and no clock of its own — the time and the unique id of an assertion come
from callables the caller injects (`time.time` and `uuid4` unless a test passes others).

A private key or secret never appears in a `repr`, a log line or an error message: errors
name what was wrong with the key (its kind, its format), never its text.
"""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigurationError

__all__ = ["ASSERTION_TYPE", "AssertionMaker", "Signer", "load_private_key", "secret_signer"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_EXTRA = "pip install 'renewauth[jwt]'"
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_KEY_FIX = (
    "pass private_key= as a PEM string or bytes (PKCS#8 or traditional) or as a JWK (a dict "
    "or its JSON text) holding an RSA or EC private key"
)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _jwt() -> Any:
    """The PyJWT module, or a `ConfigurationError` naming the extra to install."""
    try:
        import cryptography  # noqa: F401 - PyJWT needs it for RSA and EC keys
        import jwt
    except ImportError:
        raise ConfigurationError(
            f"signed JWTs (private_key_jwt, client_secret_jwt, the JWT bearer grant, DPoP) "
            f"need PyJWT and cryptography: {_EXTRA}"
        ) from None
    return jwt


class Signer:
    """A key and the algorithm it signs with; its `repr` shows the algorithm and key id only."""

    __slots__ = ("_key", "algorithm", "key_id")

    def __init__(self, key: object, algorithm: str, key_id: str | None) -> None:
        self._key = key
        self.algorithm = algorithm
        self.key_id = key_id

    def __repr__(self) -> str:
        return f"<Signer {self.algorithm} key_id={self.key_id!r}>"

    def __reduce__(self) -> tuple[object, ...]:
        # A private key is never written into a pickle (a queue, a cache, a spawn worker).
        raise ConfigurationError(
            "an auth object holding a private key or a DPoP key (private_key_jwt, "
            "client_secret_jwt, OAuth2JwtBearer, dpop=True) cannot be pickled; build it in "
            "the process that uses it"
        )

    def sign(
        self, claims: Mapping[str, object], headers: Mapping[str, object] | None = None
    ) -> str:
        """A compact JWS of `claims`, with `kid` in its header when the key has an id."""
        header: dict[str, object] = dict(headers or {})
        if self.key_id is not None:
            header.setdefault("kid", self.key_id)
        token: str = _jwt().encode(
            dict(claims), self._key, algorithm=self.algorithm, headers=header
        )
        return token

    def compact_signer(self, header: Mapping[str, object]) -> Callable[[Mapping[str, object]], str]:
        """A function that signs claims under a fixed `header`, for a P-256 (ES256) key.

        The header is encoded once and the signature made by cryptography directly: a DPoP
        proof per request pays for one signature and one small JSON encoding, not for a
        JOSE library's generic path (see benchmarks/bench_dpop.py).
        """
        _jwt()
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        if self.algorithm != "ES256":
            raise ConfigurationError("compact signing is for ES256 keys only")
        prefix = _b64url(json.dumps({"alg": "ES256", **header}, separators=(",", ":")).encode())
        head = prefix.encode("ascii") + b"."
        key, algorithm, dumps = self._key, ec.ECDSA(hashes.SHA256()), json.dumps

        def sign(claims: Mapping[str, object]) -> str:
            payload = _b64url(dumps(claims, separators=(",", ":")).encode())
            signing_input = head + payload.encode("ascii")
            r, s = decode_dss_signature(key.sign(signing_input, algorithm))  # type: ignore[attr-defined]
            signature = _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
            return f"{prefix}.{payload}.{signature}"

        return sign

    def public_jwk(self) -> dict[str, object]:
        """The public half as a JWK (for DPoP's `jwk` header); only for RSA and EC keys."""
        jwt = _jwt()
        if self.algorithm.startswith("ES"):
            text = jwt.algorithms.ECAlgorithm.to_jwk(self._key.public_key())  # type: ignore[attr-defined]
        else:
            text = jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key())  # type: ignore[attr-defined]
        jwk: dict[str, object] = json.loads(text)
        return {name: jwk[name] for name in ("kty", "crv", "x", "y", "n", "e") if name in jwk}


def load_private_key(private_key: object, *, key_id: str | None = None) -> Signer:
    """A `Signer` for an RSA (RS256) or EC (ES256/384/512) private key in PEM or JWK form.

    Raises:
        ConfigurationError: the key cannot be read, is public only, or is of another kind;
            or the `renewauth[jwt]` extra is missing. The message never holds the key.
    """
    if key_id is not None and (not isinstance(key_id, str) or not key_id):
        raise ConfigurationError("key_id= must be a non-empty string or None")
    jwt = _jwt()
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key: object
    jwk: Mapping[str, object] | None = None
    if isinstance(private_key, Mapping):
        jwk = private_key
    elif isinstance(private_key, str) and private_key.lstrip().startswith("{"):
        try:
            loaded = json.loads(private_key)
        except ValueError:
            raise ConfigurationError(f"private_key= is not valid JWK JSON; {_KEY_FIX}") from None
        if not isinstance(loaded, dict):
            raise ConfigurationError(f"private_key= is not a JWK object; {_KEY_FIX}")
        jwk = loaded
    if jwk is not None:
        if "d" not in jwk:
            raise ConfigurationError(f"private_key= is a public JWK (no 'd'); {_KEY_FIX}")
        try:
            key = jwt.PyJWK(dict(jwk)).key
        except Exception:  # PyJWT raises several kinds; none may carry the key out
            raise ConfigurationError(f"private_key= is not a usable JWK; {_KEY_FIX}") from None
        if key_id is None and isinstance(jwk.get("kid"), str):
            key_id = str(jwk["kid"])
    elif isinstance(private_key, str | bytes):
        data = private_key.encode() if isinstance(private_key, str) else private_key
        try:
            key = load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise ConfigurationError(
                f"private_key= could not be read as an unencrypted PEM private key; {_KEY_FIX}"
            ) from None
        except Exception:  # cryptography's UnsupportedAlgorithm and its kin
            raise ConfigurationError(f"private_key= holds an unsupported key; {_KEY_FIX}") from None
    else:
        raise ConfigurationError(
            f"private_key= must be PEM text or a JWK, got {type(private_key).__name__}"
        )
    if isinstance(key, rsa.RSAPrivateKey):
        return Signer(key, "RS256", key_id)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = _EC_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise ConfigurationError(
                f"private_key= is an EC key on {key.curve.name}; use P-256, P-384 or P-521"
            )
        return Signer(key, algorithm, key_id)
    raise ConfigurationError(f"private_key= is neither an RSA nor an EC private key; {_KEY_FIX}")


def secret_signer(secret: str) -> Signer:
    """A `Signer` that signs with HS256 keyed by a client secret (`client_secret_jwt`)."""
    _jwt()
    return Signer(secret.encode(), "HS256", None)


def generate_dpop_key() -> Signer:
    """A fresh P-256 key for DPoP proofs, one per auth object, never written anywhere."""
    _jwt()
    from cryptography.hazmat.primitives.asymmetric import ec

    return Signer(ec.generate_private_key(ec.SECP256R1()), "ES256", None)


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True, kw_only=True)
class AssertionMaker:
    """Makes a fresh signed assertion per token call: `iat` now, a short `exp`, a new `jti`.

    Args:
        signer: the key it signs with (never shown).
        lifetime: seconds until `exp`; short, since every call gets a new one.
        clock: seconds since the epoch (inject a fake clock in tests).
        new_id: a unique `jti` per assertion.
    """

    signer: Signer = field(repr=False)
    lifetime: float = 60.0
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)
    new_id: Callable[[], str] = field(default=_new_id, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not math.isfinite(self.lifetime) or self.lifetime <= 0:
            raise ConfigurationError("an assertion's lifetime must be a number of seconds > 0")

    def assertion(
        self,
        *,
        issuer: str,
        subject: str,
        audience: str,
        claims: Mapping[str, object] | None = None,
    ) -> str:
        """A signed JWT from `issuer` about `subject` for `audience`, valid `lifetime` s."""
        now = int(self.clock())
        body: dict[str, object] = {
            "iss": issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "exp": now + math.ceil(self.lifetime),
            "jti": self.new_id(),
            **(claims or {}),
        }
        return self.signer.sign(body)
