"""DPoP (RFC 9449): a key per auth object, proofs for token calls and API requests.

`DpopKey` holds the auth object's P-256 key (made in memory, never stored or shown), the
server nonces it was told, and makes proofs (`htm`, `htu`, `iat`, `jti`, and `ath` for an
API request); its clock and id factory are injected, so a proof is a pure function of its
inputs. `DpopGrant` wraps a grant as a sans-IO flow: it adds a proof to every token request,
remembers a `DPoP-Nonce` the server sends, resends once when the server answers
`use_dpop_nonce`, and insists on a `token_type` of `DPoP`.

The nonces of the authorization server (its token endpoint, RFC 9449 §8) and of resource
servers (the APIs, §9) are kept apart, each per origin: an API on the token endpoint's
origin (Keycloak's, oidc-provider's own resources) has a nonce of its own, and sends it on
its answers; kept in one place, each would overwrite the other, and every token call and
the first API request after it would meet `use_dpop_nonce`.

No I/O here; the transports put the API proofs on requests.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import urlsplit, urlunsplit

from ._jose import Signer, generate_dpop_key
from ._urls import origin_of
from .errors import TokenRequestError
from .flows import Flow, Grant, TokenRequest, TokenResponse
from .oauth2 import read_oauth_error
from .token import Token

__all__ = ["DpopGrant", "DpopKey", "NonceServer", "htu_of"]

NonceServer = Literal["authorization", "resource"]
"""Whose nonce: the authorization server's (token calls) or a resource server's (APIs)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def htu_of(url: str) -> str:
    """The `htu` of a request: its URL without query and fragment (RFC 9449 §4.2)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, "", ""))


class DpopKey:
    """The DPoP key of one auth object and the nonces servers gave it.

    Args:
        signer: the key (by default a fresh P-256 key, ES256).
        clock: seconds since the epoch, for `iat`.
        new_id: a unique `jti` per proof.
    """

    __slots__ = ("_ath", "_nonces", "_sign", "clock", "new_id", "signer", "thumbprint")

    def __init__(
        self,
        signer: Signer | None = None,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.signer = signer or generate_dpop_key()
        self.clock, self.new_id = clock, new_id
        jwk = self.signer.public_jwk()
        self._sign = self.signer.compact_signer({"typ": "dpop+jwt", "jwk": jwk})
        required = {
            name: jwk[name] for name in sorted(jwk) if name in ("crv", "e", "kty", "n", "x", "y")
        }
        canonical = json.dumps(required, separators=(",", ":"), sort_keys=True).encode()
        self.thumbprint = _b64(hashlib.sha256(canonical).digest())  # RFC 7638, the `jkt`
        self._nonces: dict[tuple[NonceServer, str], str] = {}  # (server, origin) -> nonce
        self._ath: tuple[str, str] = ("", "")

    def __repr__(self) -> str:
        return f"<DpopKey {self.signer.algorithm} jkt={self.thumbprint}>"

    def __reduce__(self) -> tuple[object, ...]:
        return self.signer.__reduce__()  # refused: the key stays in this process

    def remember_nonce(
        self, url: str, nonce: str | None, *, server: NonceServer = "resource"
    ) -> None:
        """Keep the nonce a server sent (`DPoP-Nonce`) for its next proofs: the token
        endpoint's (`server="authorization"`) apart from an API's on the same origin."""
        if nonce:
            self._nonces[server, origin_of(url)] = nonce

    def nonce_for(self, url: str, *, server: NonceServer = "resource") -> str | None:
        """The last nonce that `server` at the origin of `url` sent, if any."""
        return self._nonces.get((server, origin_of(url))) if self._nonces else None

    def _access_hash(self, access_token: str) -> str:
        token, ath = self._ath
        if token != access_token:  # one hash per token, not per request
            ath = _b64(hashlib.sha256(access_token.encode("ascii")).digest())
            self._ath = (access_token, ath)
        return ath

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        server: NonceServer = "resource",
    ) -> str:
        """A signed proof for one request: `htm`, `htu`, `iat`, `jti`, `ath`, and the
        `nonce` that `server` last sent (a token call's is the authorization server's)."""
        claims: dict[str, object] = {
            "htm": method.upper(),
            "htu": htu_of(url),
            "iat": int(self.clock()),
            "jti": self.new_id(),
        }
        if access_token is not None:
            claims["ath"] = self._access_hash(access_token)
        nonce = self.nonce_for(url, server=server)
        if nonce is not None:
            claims["nonce"] = nonce
        return self._sign(claims)


@dataclass(frozen=True, slots=True, kw_only=True)
class DpopGrant:
    """A grant whose token calls carry DPoP proofs and whose tokens are DPoP-bound.

    Args:
        inner: the grant that says what to send.
        key: the auth object's DPoP key.
    """

    inner: Any = field(repr=False)  # a Grant
    key: DpopKey = field(repr=False, compare=False)

    @property
    def token_url(self) -> str:
        return str(self.inner.token_url)

    @property
    def can_renew(self) -> bool:
        return bool(self.inner.can_renew)

    @property
    def metadata(self) -> Any:
        """The inner grant's discovered metadata, if it discovers."""
        return getattr(self.inner, "metadata", None)

    @property
    def wrapped(self) -> Grant:
        """The grant whose calls get proofs (`flows.WrappingGrant`)."""
        return cast(Grant, self.inner)

    def identity(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        public, secrets = self.inner.identity()
        # A DPoP token is bound to this object's key: no other key may share its cache entry.
        return (*public, f"dpop:{self.key.thumbprint}"), secrets

    def _exchange(
        self, request: TokenRequest
    ) -> Generator[TokenRequest, TokenResponse, TokenResponse]:
        if request.grant == "discovery":
            return (yield request)
        for attempt in range(2):
            # The nonce retry is a new call: a client assertion in it is made again too.
            response = yield self._proven(request if attempt == 0 else request.retry())
            nonce = response.headers.get("dpop-nonce")
            self.key.remember_nonce(request.url, nonce, server="authorization")
            asked = (
                response.status in (400, 401) and read_oauth_error(response)[0] == "use_dpop_nonce"
            )
            if not (asked and nonce and attempt == 0):
                return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _proven(self, request: TokenRequest) -> TokenRequest:
        """`request` with a new proof; a retry of it gets a new one again (a proof's jti is
        good for one call, and its iat and nonce age)."""
        proof = self.key.proof(request.method, request.url, server="authorization")
        return dataclasses.replace(
            request,
            headers={**request.headers, "DPoP": proof},
            again=lambda: self._proven(request.retry()),
        )

    def fetch(self, current: Token | None) -> Flow:
        flow: Flow = self.inner.fetch(current)
        try:
            try:
                request = next(flow)
            except StopIteration as done:
                return self._checked(done.value)
            while True:
                response = yield from self._exchange(request)
                try:
                    request = flow.send(response)
                except StopIteration as done:
                    return self._checked(done.value)
        finally:
            flow.close()

    def _checked(self, token: Token) -> Token:
        if token.token_type.lower() != "dpop":
            origin = origin_of(self.token_url)
            raise TokenRequestError(
                f"{origin} issued a {token.token_type} token although dpop=True asked for a "
                "DPoP-bound one; enable DPoP for this client on the server, or drop dpop=True",
                origin=origin,
            )
        return token


def dpop_grant(grant: Grant, key: DpopKey) -> DpopGrant:
    """`grant` with DPoP proofs on its token calls, bound to `key`."""
    return DpopGrant(inner=grant, key=key)
