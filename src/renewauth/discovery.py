"""Authorization server metadata: OpenID Connect Discovery 1.0 and RFC 8414, sans-IO.

`DiscoveredGrant` wraps the grant an auth object would have built with a known token URL.
On its first token call it yields a GET of `{issuer}/.well-known/openid-configuration`
(falling back to RFC 8414's `/.well-known/oauth-authorization-server` inserted before the
issuer's path), checks that the document names the very issuer it was asked for, keeps it,
and only then runs the real grant against the token endpoint it names. Constructors stay free
of I/O; a document that is missing or wrong is a `DiscoveryError` naming the URLs tried.

No I/O, no clock: the manager's driver sends the GET like any token request.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from ._urls import origin_of, require_secure_url
from .errors import DiscoveryError, TokenEndpointUnavailable
from .flows import Flow, Grant, TokenRequest, TokenResponse
from .oauth2 import TLS_CLIENT_AUTH, clean_text
from .token import Token

__all__ = ["DiscoveredGrant", "ServerMetadata", "metadata_urls", "parse_metadata"]

logger = logging.getLogger(__name__)

_OIDC = "/.well-known/openid-configuration"
_RFC8414 = "/.well-known/oauth-authorization-server"
_NO_ALIASES: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerMetadata:
    """What renewauth reads from a metadata document.

    Args:
        issuer: the issuer the document names (equal to the one asked for).
        token_endpoint: where token requests go.
        mtls_endpoint_aliases: RFC 8705 §5: endpoints to use with a client certificate.
        auth_methods: `token_endpoint_auth_methods_supported`, if the server lists them.
        dpop_algorithms: `dpop_signing_alg_values_supported`, if the server lists them.
        authorization_endpoint: where a person's browser is sent to consent, if listed.
        device_authorization_endpoint: RFC 8628's device authorization endpoint, if listed.
    """

    issuer: str
    token_endpoint: str
    mtls_endpoint_aliases: Mapping[str, str] = field(default_factory=lambda: _NO_ALIASES)
    auth_methods: tuple[str, ...] = ()
    dpop_algorithms: tuple[str, ...] = ()
    authorization_endpoint: str | None = None
    device_authorization_endpoint: str | None = None

    def token_endpoint_for(self, client_auth: str | None) -> str:
        """The token endpoint, or its mTLS alias when the client authenticates by TLS."""
        if client_auth in TLS_CLIENT_AUTH:
            return self.mtls_endpoint_aliases.get("token_endpoint", self.token_endpoint)
        return self.token_endpoint


def metadata_urls(issuer: str) -> tuple[str, str]:
    """The OpenID Connect and the RFC 8414 metadata URLs of `issuer`, in the order tried.

    OpenID Connect appends the well-known path to the issuer; RFC 8414 §3 inserts it between
    the host and the issuer's path (`https://h/.well-known/oauth-authorization-server/t1`).
    """
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    oidc = urlunsplit((parts.scheme, parts.netloc, path + _OIDC, "", ""))
    rfc8414 = urlunsplit((parts.scheme, parts.netloc, _RFC8414 + path, "", ""))
    return oidc, rfc8414


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str))


def parse_metadata(response: TokenResponse, *, issuer: str) -> ServerMetadata:
    """The metadata in `response`, checked against `issuer`.

    Raises:
        DiscoveryError: not a 2xx JSON object, another issuer, or no usable token endpoint.
    """
    url = response.url
    if not 200 <= response.status < 300:
        raise DiscoveryError(
            f"no metadata document at {url} (HTTP {response.status})",
            urls=(url,),
            status=response.status,
            origin=response.origin,
        )
    data = response.json_object()
    if data is None:
        raise DiscoveryError(
            f"the metadata document at {url} is not a JSON object; check the issuer URL",
            urls=(url,),
            status=response.status,
            origin=response.origin,
        )
    named = data.get("issuer")
    if named != issuer:
        shown = repr(clean_text(named)) if isinstance(named, str) else "no issuer"
        raise DiscoveryError(
            f"the metadata document at {url} names {shown}, not the issuer {issuer!r} it "
            "was asked for (OpenID Connect Discovery §4.3); pass the issuer exactly as the "
            "server states it, trailing slash included",
            urls=(url,),
            status=response.status,
            origin=response.origin,
        )
    endpoint = data.get("token_endpoint")
    if not isinstance(endpoint, str) or urlsplit(endpoint).scheme not in ("http", "https"):
        raise DiscoveryError(
            f"the metadata document at {url} has no usable token_endpoint",
            urls=(url,),
            status=response.status,
            origin=response.origin,
        )
    raw_aliases = data.get("mtls_endpoint_aliases")
    aliases = (
        {k: v for k, v in raw_aliases.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(raw_aliases, dict)
        else {}
    )
    return ServerMetadata(
        issuer=issuer,
        token_endpoint=endpoint,
        mtls_endpoint_aliases=MappingProxyType(aliases),
        auth_methods=_strings(data.get("token_endpoint_auth_methods_supported")),
        dpop_algorithms=_strings(data.get("dpop_signing_alg_values_supported")),
        authorization_endpoint=_url(data.get("authorization_endpoint")),
        device_authorization_endpoint=_url(data.get("device_authorization_endpoint")),
    )


def _url(value: object) -> str | None:
    """`value` if it is an absolute http(s) URL, else `None`."""
    try:
        usable = isinstance(value, str) and urlsplit(value).scheme in ("http", "https")
    except ValueError:  # an unparsable URL (a bad IPv6 literal)
        return None
    return value if usable and isinstance(value, str) else None


class _Found:
    """The metadata once found: one per auth object, shared by its threads."""

    __slots__ = ("_lock", "grant", "metadata")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.metadata: ServerMetadata | None = None
        self.grant: Grant | None = None

    def __reduce__(self) -> tuple[object, ...]:
        return _Found, ()  # a copy in another process discovers again

    def keep(self, metadata: ServerMetadata, grant: Grant) -> None:
        with self._lock:
            self.metadata, self.grant = metadata, grant


def discover(issuer: str) -> Generator[TokenRequest, TokenResponse, ServerMetadata]:
    """Yield the metadata GETs, the RFC 8414 one only if the first has no document."""
    tried: list[str] = []
    last: DiscoveryError | None = None
    for url in metadata_urls(issuer):
        tried.append(url)
        response = yield TokenRequest(
            url=url,
            body=b"",
            headers={"Accept": "application/json"},
            grant="discovery",
            method="GET",
        )
        if response.status == 429 or response.status >= 500:
            raise TokenEndpointUnavailable(
                f"the metadata document at {url} is unavailable (HTTP {response.status}); "
                "try again later",
                status=response.status,
                origin=response.origin,
            )
        try:
            return parse_metadata(response, issuer=issuer)
        except DiscoveryError as exc:
            if response.status != 404:
                raise
            last = exc
    assert last is not None
    raise DiscoveryError(
        f"no metadata document for issuer {issuer!r}: tried {', '.join(tried)} (HTTP "
        f"{last.status}); check the issuer URL (for Keycloak: .../realms/NAME)",
        urls=tuple(tried),
        status=last.status,
        origin=origin_of(issuer),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveredGrant:
    """A grant whose token endpoint comes from the issuer's metadata, read on first use.

    Args:
        issuer: the issuer URL, compared exactly with the document's `issuer`.
        template: the grant as built with `token_url=issuer`; its `token_url` is replaced by
            the discovered endpoint (or its mTLS alias for a TLS-authenticated client).
        allow_insecure_http: whether a plain-http token endpoint off loopback is accepted.
    """

    issuer: str
    template: Any = field(repr=False)  # a frozen grant dataclass with a `token_url` field
    allow_insecure_http: bool = False
    found: _Found = field(default_factory=_Found, repr=False, compare=False)
    on_found: Callable[[ServerMetadata], None] | None = field(
        default=None, repr=False, compare=False
    )
    can_renew: bool = True

    @property
    def token_url(self) -> str:
        """The endpoint token calls go to once discovered (the mTLS alias if it applies)."""
        grant = self.found.grant
        return grant.token_url if grant is not None else self.issuer

    @property
    def metadata(self) -> ServerMetadata | None:
        """The metadata, once the first token call has read it."""
        return self.found.metadata

    @property
    def wrapped(self) -> Grant:
        """The grant as configured (`flows.WrappingGrant`)."""
        return cast(Grant, self.template)

    def identity(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        public, secrets = self.template.identity()
        return ("discovered", *public), secrets

    def _client_auth(self) -> str | None:
        client = getattr(self.template, "client", None)
        return getattr(client, "auth", None)

    def fetch(self, current: Token | None) -> Flow:
        grant = self.found.grant
        if grant is None:
            metadata = yield from discover(self.issuer)
            endpoint = metadata.token_endpoint_for(self._client_auth())
            require_secure_url(
                endpoint,
                what="the discovered token_endpoint",
                allow_insecure_http=self.allow_insecure_http,
            )
            grant = dataclasses.replace(self.template, token_url=endpoint)
            self.found.keep(metadata, grant)
            logger.debug(
                "discovered the token endpoint of %s at %s", self.issuer, origin_of(endpoint)
            )
            if self.on_found is not None:
                self.on_found(metadata)
        token: Token = yield from grant.fetch(current)
        return token
