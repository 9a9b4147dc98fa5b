"""The checks and builders behind the auth classes' constructors, shared with the providers.

Each check turns one argument (or a combination) into what the grant or the manager needs, or
raises a `ConfigurationError` that names the fix; the defaults an object gets when it names
none (the shared sender, the default store) are chosen here too. Nothing here sends a request.
The classes in `renewauth.auth` and `renewauth.providers` call these, so that an option means
the same and is refused with the same words everywhere.
"""

from __future__ import annotations

import math
import re
import ssl
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import cast
from urllib.parse import urlsplit

from ._jose import AssertionMaker, load_private_key, secret_signer
from ._urls import is_loopback_host, origin_of
from .errors import ConfigurationError, InsecureTransportError
from .flows import Grant, chain_grant
from .oauth2 import CLIENT_AUTH_METHODS, TLS_CLIENT_AUTH, BodyEncoding, Client, ClientAuth
from .stores import TokenStore, default_store
from .stores._durable import durable_store
from .transports.httpx import CertOption, HttpxSender, VerifyOption

__all__ = [
    "SHARED_SENDER",
    "check_callbacks",
    "check_idle_timeout",
    "check_options",
    "client_for",
    "client_from",
    "default_store_for",
    "header_table",
    "key_fingerprint",
    "not_a_store",
    "require_text",
    "require_tls_certificate",
    "scope_text",
    "sender_for",
    "store_for",
]


def check_options(
    leeway: float, retry_statuses: Collection[int], timeout: float, retries: int
) -> frozenset[int]:
    """The numeric options every auth object takes, checked; the statuses as a frozenset."""
    if isinstance(leeway, bool) or not isinstance(leeway, int | float):
        raise ConfigurationError(
            f"leeway= must be seconds as a number, got {type(leeway).__name__}"
        )
    if not math.isfinite(leeway) or leeway < 0:
        raise ConfigurationError("leeway= must be a finite number of seconds >= 0, such as 30")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigurationError("timeout= must be a number of seconds > 0, such as 10")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigurationError("retries= must be a whole number >= 0, such as 2")
    if isinstance(retry_statuses, str | bytes) or not isinstance(retry_statuses, Collection):
        raise ConfigurationError("retry_statuses= must be a collection of statuses, such as (401,)")
    statuses = frozenset(retry_statuses)
    for status in statuses:
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ConfigurationError(
                f"retry_statuses= holds {status!r}; list HTTP error statuses such as (401,)"
            )
    return statuses


def check_idle_timeout(value: float | None) -> float | None:
    """`refresh_idle_timeout=` as seconds, or None."""
    if value is None:
        return None
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):  # 10**400 overflows
        seconds = math.nan
    if not isinstance(value, int | float) or not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(
            "refresh_idle_timeout= must be seconds > 0 (such as 30 * 86400 for Keycloak's "
            "offline sessions) or None"
        )
    return seconds


def scope_text(scope: str | Sequence[str] | None) -> str | None:
    """Scopes as the space-separated string RFC 6749 §3.3 sends; `None` when empty."""
    if scope is None:
        return None
    if isinstance(scope, str):
        return scope or None
    if not all(isinstance(part, str) for part in scope):
        raise ConfigurationError("scope= must be a string or a sequence of strings")
    return " ".join(scope) or None


def require_text(name: str, value: object) -> str:
    """`value` if it is a non-empty string, else a `ConfigurationError` naming `name=`."""
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{name}= must be a non-empty string")
    return value


def client_from(
    client_id: str,
    client_secret: str | None,
    client_auth: ClientAuth,
    body: BodyEncoding,
    headers: Mapping[str, str] | None = None,
    *,
    private_key: object = None,
    key_id: str | None = None,
    clock: Callable[[], float] = time.time,
) -> Client:
    """A validated `Client`; bad combinations raise `ConfigurationError` naming the fix.

    `private_key=` (PEM or JWK, RSA or EC) and `key_id=` serve `client_auth="private_key_jwt"`;
    `client_secret_jwt` signs with the client secret; `clock` stamps the assertions.
    """
    require_text("client_id", client_id)
    if client_secret is not None and not isinstance(client_secret, str):
        raise ConfigurationError("client_secret= must be a string or None")
    if client_auth not in CLIENT_AUTH_METHODS:
        raise ConfigurationError(
            "client_auth= must be one of "
            + ", ".join(repr(m) for m in CLIENT_AUTH_METHODS)
            + f", got {client_auth!r}"
        )
    if body not in ("form", "json"):
        raise ConfigurationError(f"body= must be 'form' or 'json', got {body!r}")
    if client_auth in ("basic", "client_secret_jwt") and not client_secret:
        raise ConfigurationError(
            f"client_auth={client_auth!r} needs client_secret=; a public client sends only "
            "its client_id, so leave client_auth='body'"
        )
    if private_key is not None and client_auth != "private_key_jwt":
        raise ConfigurationError(
            "private_key= is used only with client_auth='private_key_jwt'; pass both"
        )
    if key_id is not None and client_auth != "private_key_jwt":
        raise ConfigurationError("key_id= is used only with client_auth='private_key_jwt'")
    assertion = None
    if client_auth == "private_key_jwt":
        if private_key is None:
            raise ConfigurationError(
                "client_auth='private_key_jwt' needs private_key= (PEM text or a JWK of an RSA "
                "or EC private key) and, if the server registered several, key_id="
            )
        assertion = AssertionMaker(signer=load_private_key(private_key, key_id=key_id), clock=clock)
    elif client_auth == "client_secret_jwt":
        assertion = AssertionMaker(signer=secret_signer(str(client_secret)), clock=clock)
    return Client(
        client_id=client_id,
        # The JWT and TLS methods never send the secret itself.
        client_secret=client_secret if client_auth in ("body", "basic") else None,
        key_fingerprint=(
            key_fingerprint(private_key)
            if private_key is not None
            else (client_secret or "" if client_auth == "client_secret_jwt" else "")
        ),
        auth=client_auth,
        body=body,
        headers=dict(headers or {}),
        assertion=assertion,
    )


def client_for(  # noqa: PLR0917 - the order of the auth classes' own parameters
    client_id: str,
    client_secret: str | None,
    client_auth: ClientAuth,
    body: BodyEncoding,
    private_key: object,
    key_id: str | None,
    options: Mapping[str, object],
    *,
    headers: Mapping[str, str] | None = None,
) -> Client:
    """`client_from` for a class that takes the `TokenAuth` options: their `clock=` stamps
    the client assertions, as it stamps everything else of the object."""
    clock = cast("Callable[[], float]", options.get("clock", time.time))
    return client_from(
        client_id,
        client_secret,
        client_auth,
        body,
        headers,
        private_key=private_key,
        key_id=key_id,
        clock=clock,
    )


def require_tls_certificate(client_auth: str, options: Mapping[str, object]) -> None:
    """A TLS client authentication method needs `cert=` (or an `SSLContext` holding one)."""
    if client_auth in TLS_CLIENT_AUTH and options.get("cert") is None:
        verify = options.get("verify")
        if not isinstance(verify, ssl.SSLContext):
            raise ConfigurationError(
                f"client_auth={client_auth!r} needs cert= (the client certificate and key "
                "files, or one PEM file holding both) for the token call"
            )


# The protocol's own methods, in the order it declares them: the error names the missing ones.
_STORE_METHODS = tuple(name for name in vars(TokenStore) if not name.startswith("_"))


def not_a_store(store: object) -> str:
    """Why `store` is no `TokenStore`: the methods its class lacks."""
    missing = [name for name in _STORE_METHODS if not hasattr(type(store), name)]
    message = f"store= must be a token store such as MemoryStore(), got {type(store).__name__}"
    if missing and len(missing) < len(_STORE_METHODS):
        message += (
            f", whose class lacks {', '.join(missing)}: define each method on the class (a "
            "__getattr__ that forwards them does not count)"
        )
    return message


def key_fingerprint(private_key: object) -> str:
    """Something that changes with the key, hashed with the other secrets for the cache key."""
    return (
        repr(sorted(private_key.items())) if isinstance(private_key, Mapping) else str(private_key)
    )


#: The sender of every auth object that keeps the default trust store, certificate and proxy.
SHARED_SENDER = HttpxSender()


def sender_for(
    token_url: str, *, verify: VerifyOption, cert: CertOption | None, proxy: str | None
) -> HttpxSender:
    """The sender of the token calls: the shared one unless `verify=`, `cert=` or `proxy=`
    asks for another. Certificate checks may be turned off only for a loopback server."""
    sender = SHARED_SENDER
    if verify is not True or cert is not None or proxy is not None:
        sender = HttpxSender(verify=verify, cert=cert, proxy=proxy)
    if verify is False and not is_loopback_host(urlsplit(token_url).hostname or ""):
        raise InsecureTransportError(
            f"verify=False is refused for {origin_of(token_url)}: certificate checks "
            "may only be turned off for a loopback server; pass verify= the CA bundle "
            "(a file path or an ssl.SSLContext) instead"
        )
    return sender


def default_store_for(grant: Grant) -> TokenStore:
    """The store of an object given none: the process-wide `MemoryStore`, except for a chain
    that only a refresh token carries, which dies with a store in memory: it is kept on disk
    (the durable default), so the next run continues it."""
    return durable_store() if chain_grant(grant) is not None else default_store()


def store_for(grant: Grant, store: object) -> TokenStore:
    """`store=` checked against the `TokenStore` protocol, or the default for `grant`."""
    if store is None:
        return default_store_for(grant)
    if not isinstance(store, TokenStore):
        raise ConfigurationError(not_a_store(store))
    return store


def check_callbacks(on_token: object, on_event: object) -> None:
    """`on_token=` and `on_event=` are callables or None."""
    if on_token is not None and not callable(on_token):
        raise ConfigurationError("on_token= must be a callable taking a Token, or None")
    if on_event is not None and not callable(on_event):
        raise ConfigurationError(
            "on_event= must be a callable taking a renewauth.events value, or None"
        )


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_HEADER_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?")  # visible ASCII
_FRAMING = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection", "te"}
    | {"upgrade", "trailer", "keep-alive", "expect"}
)


def header_table(argument: str, headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """Headers a caller adds, checked: names are RFC 9110 tokens, values visible ASCII,
    none of the headers HTTP itself frames the request with. A value is never shown (it may
    be a key)."""
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        raise ConfigurationError(f"{argument}= must be a mapping of header names to values")
    for number, (name, value) in enumerate(headers.items(), 1):
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ConfigurationError(
                f"{argument}= header {number} has no valid name (letters, digits and "
                "-!#$%&'*+.^_`|~ only, such as x-api-key)"
            )
        if name.lower() in _FRAMING:
            raise ConfigurationError(
                f"{argument}= cannot set {name}: the HTTP client frames the request with "
                "it; leave it out"
            )
        if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
            raise ConfigurationError(
                f"{argument}= {name} must be visible ASCII text, without line breaks or "
                "spaces at its ends (its value is not shown)"
            )
    return dict(headers)
