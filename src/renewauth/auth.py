"""The public auth objects: one object for requests, httpx, httpx2 and aiohttp.

`TokenAuth` joins a grant (what to send), a `TokenManager` (when) and the transports (how).
Every public class (a provider too) is a thin `TokenAuth` that builds its grant from its
arguments. Constructors validate and do no I/O: the first request fetches the first token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Self, TypedDict, TypeVar, Unpack, cast

from ._arguments import (
    SHARED_SENDER,
    check_callbacks,
    check_idle_timeout,
    check_options,
    client_for,
    default_store_for,
    key_fingerprint,
    require_text,
    require_tls_certificate,
    scope_text,
    sender_for,
    store_for,
)
from ._jose import AssertionMaker, load_private_key
from ._pickling import portable, restored, transient_attributes
from ._urls import origin_of, require_secure_url
from .discovery import DiscoveredGrant, ServerMetadata
from .dpop import DpopGrant, DpopKey
from .errors import ConfigurationError
from .events import OnEvent
from .flows import Grant, StaticGrant, chain_grant
from .manager import OnToken, TokenManager
from .oauth2 import (
    BodyEncoding,
    ClientAuth,
    ClientCredentialsGrant,
    JwtBearerGrant,
    PasswordGrant,
    RefreshTokenGrant,
)
from .stores import MemoryStore, TokenStore, default_store
from .token import Token
from .transports.clients import ClientSigning
from .transports.httpx import CertOption, VerifyOption, adopt_imported_forks

__all__ = [
    "AuthOptions",
    "BearerToken",
    "OAuth2ClientCredentials",
    "OAuth2JwtBearer",
    "OAuth2Password",
    "OAuth2RefreshToken",
    "TokenAuth",
]

_Auth = TypeVar("_Auth", bound="TokenAuth")


class AuthOptions(TypedDict, total=False):
    """The keyword-only options every auth class takes (see `TokenAuth`)."""

    store: TokenStore | None
    leeway: float
    retry_statuses: Collection[int]
    on_token: OnToken | None
    timeout: float
    retries: int
    allow_insecure_http: bool
    refresh_idle_timeout: float | None
    on_event: OnEvent | None
    verify: VerifyOption
    cert: CertOption | None
    proxy: str | None
    dpop: bool
    clock: Callable[[], float]


class TokenAuth(ClientSigning):
    """Base of every renewauth auth object: a requests auth, an httpx and httpx2 `Auth` and
    an aiohttp client middleware at once.

    Assign it to `session.auth`, pass it as `auth=` to an httpx or httpx2 client (sync or
    async) or in `middlewares=(auth,)` to an `aiohttp.ClientSession`, or all with the same
    object. It fetches a token on the first request, renews it before it expires and again
    when the API answers a status in `retry_statuses`, and resends that request once.

    Args:
        grant: what to send to the token endpoint (a flow from `oauth2` or a provider).
        store: where tokens live; the process-wide `MemoryStore` by default. Objects with the
            same credentials share one token and one renewal in a store.
        leeway: seconds before expiry at which renewal starts (a token that lives less than
            twice this renews at half its life).
        retry_statuses: API statuses that mean "token rejected": renew once (unless another
            caller already did) and resend once. 403 is not among them by default.
        on_token: called with every new `Token` after the store has it.
        timeout: seconds for each token-endpoint call.
        retries: extra tries of a token-endpoint call on network errors, 5xx and 429.
        allow_insecure_http: allow a plain-http token URL off loopback.
        refresh_idle_timeout: seconds a refresh token survives unused, for servers that state
            nothing (a Keycloak offline session: 30 days by default); it sets when the
            refresh-token warning is logged and when `keepalive()` renews.
        on_event: called with every `renewauth.events` value of this object (renewed,
            renewal failed, resent, paused, refresh token expiring); never with a secret.
        verify: how the token call checks the server's certificate: `True` (the CA bundle
            the environment names, `SSL_CERT_FILE`, `SSL_CERT_DIR`, `REQUESTS_CA_BUNDLE` or
            `CURL_CA_BUNDLE`, else certifi's), a CA file or directory, an `ssl.SSLContext`,
            or `False`, accepted only for a loopback token endpoint.
        cert: the client certificate of the token call (mutual TLS, RFC 8705): a PEM file
            holding certificate and key, or `(certfile, keyfile)`.
        proxy: the proxy of the token call; by default `HTTPS_PROXY`, `HTTP_PROXY`,
            `ALL_PROXY` and `NO_PROXY` decide, as they do for httpx and requests.
        dpop: bind tokens to a key of this object (DPoP, RFC 9449): a proof on every token
            call and API request, server nonces honoured. Needs `renewauth[jwt]`.
        clock: seconds since the epoch; inject a fake clock in tests.

    Raises:
        ConfigurationError: an option is out of range; the message names the fix.
        InsecureTransportError: a plain-http token URL off loopback.
    """

    _discover_from: str | None = None  # set by `from_issuer` before `__init__` runs

    def __init__(
        self,
        grant: Grant,
        *,
        store: TokenStore | None = None,
        leeway: float = 30.0,
        retry_statuses: Collection[int] = (401,),
        on_token: OnToken | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        allow_insecure_http: bool = False,
        refresh_idle_timeout: float | None = None,
        on_event: OnEvent | None = None,
        verify: VerifyOption = True,
        cert: CertOption | None = None,
        proxy: str | None = None,
        dpop: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        adopt_imported_forks()
        statuses = check_options(leeway, retry_statuses, timeout, retries)
        idle_timeout = check_idle_timeout(refresh_idle_timeout)
        issuer = self._discover_from
        if issuer is not None:
            grant = DiscoveredGrant(
                issuer=issuer, template=grant, allow_insecure_http=allow_insecure_http
            )
        if not isinstance(dpop, bool):
            raise ConfigurationError("dpop= must be True or False")
        if dpop:
            self._dpop = DpopKey(clock=clock)
            grant = DpopGrant(inner=grant, key=self._dpop)
        sender = sender_for(grant.token_url, verify=verify, cert=cert, proxy=proxy)
        store = store_for(grant, store)
        check_callbacks(on_token, on_event)
        if grant.can_renew:
            require_secure_url(
                grant.token_url, what="token_url", allow_insecure_http=allow_insecure_http
            )
        self._retry_statuses = statuses
        # Set by providers: headers for every API request, the origin a server may reassign.
        self._api_headers: Mapping[str, str] = {}
        self._home_origin: str | None = None
        self._manager = TokenManager(
            grant,
            store=store,
            sender=sender,
            leeway=float(leeway),
            retries=retries,
            timeout=float(timeout),
            on_token=on_token,
            refresh_idle_timeout=idle_timeout,
            on_event=on_event,
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._describe()}>"

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled by configuration (grant, options, store), never by its cached token.

        The copy rebuilds its own manager on the other side (a spawn worker, a
        `ProcessPoolExecutor`) around the same store, so a `FileStore` or `RedisStore` shares
        tokens and renewals with this object; a `MemoryStore` arrives as the default (or a
        new) store there. What a transport keeps for this process (its `_TRANSIENT`, such as
        an async client's admission gates) stays behind too. Callables given as options
        (`on_token=`, `clock=`) must be picklable themselves.
        """
        manager = self._manager
        left_behind = transient_attributes(type(self))
        state = {name: value for name, value in self.__dict__.items() if name not in left_behind}
        store: TokenStore | None = manager.store
        if store is default_store() and chain_grant(manager.grant) is not None:
            store = None  # a chain in memory (no disk here): the other side's default
        options = {
            "store": store,
            "leeway": manager.leeway,
            "retries": manager.retries,
            "timeout": manager.timeout,
            "on_token": manager.on_token,
            "refresh_idle_timeout": manager.refresh_idle_timeout,
            "on_event": manager.on_event,
            "clock": manager.clock,
            # verify=, cert=, proxy=: the copy takes the same route and trust store.
            "sender": manager.sender,
        }
        return (_rebuild_auth, (type(self), portable(manager.grant), options, state))

    def _describe(self) -> str:
        """What `repr` shows: the token endpoint's origin and public identifiers only."""
        return origin_of(self.token_url)

    @property
    def server_metadata(self) -> ServerMetadata | None:
        """The discovered metadata (`from_issuer`), once the first token call has read it."""
        metadata = getattr(self._manager.grant, "metadata", None)
        return metadata if isinstance(metadata, ServerMetadata) else None

    @property
    def token(self) -> Token | None:
        """The cached token, or `None` before the first request; never does I/O."""
        return self._manager.token

    @property
    def token_url(self) -> str:
        """The token endpoint this object calls: the discovered one once `from_issuer` has
        read the metadata, the issuer before that.

        .. versionadded:: 0.2
        """
        return self._manager.grant.token_url

    @property
    def retry_statuses(self) -> frozenset[int]:
        """The API statuses this object takes for "token rejected" (`retry_statuses=`).

        .. versionadded:: 0.2
        """
        return frozenset(self._retry_statuses)

    @property
    def store(self) -> TokenStore:
        """Where this object keeps its tokens: `store=`, or the default it chose.

        .. versionadded:: 0.2
        """
        return self._manager.store

    @property
    def refresh_idle_timeout(self) -> float | None:
        """`refresh_idle_timeout=` in seconds (None when not given): how long a refresh token
        is taken to survive unused when the server states nothing.

        .. versionadded:: 0.2
        """
        return self._manager.refresh_idle_timeout

    def get_token(self) -> Token:
        """A valid token, fetched or renewed if needed (blocking).

        Raises:
            TokenRequestError: the token endpoint refused or failed; see its subclasses.
        """
        return self._manager.token_for_request()

    async def aget_token(self) -> Token:
        """A valid token, fetched or renewed if needed, without blocking the event loop.

        Raises:
            TokenRequestError: the token endpoint refused or failed; see its subclasses.
        """
        return await self._manager.atoken_for_request()

    def keepalive(self) -> bool:
        """Renew the token if its refresh token is past half its life; True if it renewed.

        A refresh token's life runs from its last use to the earlier of its stated expiry
        and `refresh_idle_timeout` after that use. Call it from cron (or run `renewauth
        keepalive`) more often than half that life, and a technical user's refresh token
        never dies of idleness. With no token yet, it fetches one; with no refresh token, or
        none whose end is known, it does nothing.

        Raises:
            TokenRequestError: the renewal failed; see its subclasses.

        .. versionadded:: 0.2
        """
        return self._manager.keepalive()

    async def akeepalive(self) -> bool:
        """`keepalive` without blocking the event loop.

        .. versionadded:: 0.2
        """
        return await self._manager.akeepalive()

    def invalidate(self) -> None:
        """Drop the access token (keeping its refresh token): the next request renews."""
        self._manager.invalidate()

    async def ainvalidate(self) -> None:
        """`invalidate` without blocking the event loop (new in 0.2)."""
        await self._manager.ainvalidate()


def _rebuild_auth(
    cls: type[TokenAuth], grant: object, options: dict[str, object], state: dict[str, object]
) -> TokenAuth:
    """The other half of `TokenAuth.__reduce__`: a new manager around the same store."""
    auth = cls.__new__(cls)
    auth.__dict__.update(state)
    rebuilt = cast(Grant, restored(grant))
    if options.get("store") is None:
        options["store"] = default_store_for(rebuilt)
    sender = options.pop("sender", SHARED_SENDER)
    auth._manager = TokenManager(rebuilt, sender=sender, **options)  # type: ignore[arg-type]
    return auth


class OAuth2ClientCredentials(TokenAuth):
    """OAuth 2 client credentials (RFC 6749 §4.4): a service authenticates as itself.

    Renewal repeats the grant. Example::

        session.auth = OAuth2ClientCredentials(
            "https://idp.example.com/oauth/token", "reporting", os.environ["SECRET"]
        )

    Args:
        token_url: the token endpoint.
        client_id: the client's id.
        client_secret: the client's secret.
        scope: a space-separated string or a sequence of scopes.
        audience: the `audience` parameter some servers (Auth0, …) require.
        client_auth: `"body"` (client_secret_post), `"basic"` (client_secret_basic),
            `"private_key_jwt"` (with `private_key=`), `"client_secret_jwt"`,
            `"tls_client_auth"` or `"self_signed_tls_client_auth"` (with `cert=`).
        body: `"form"` (RFC 6749) or `"json"`.
        extra: more body parameters for the token request.
        private_key: the client's RSA or EC private key for `private_key_jwt`, PEM or JWK.
        key_id: the `kid` of that key, when the server holds several.
        **options: the options of `TokenAuth` (store, leeway, retry_statuses, verify, …).
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str | None = None,
        *,
        scope: str | Sequence[str] | None = None,
        audience: str | None = None,
        client_auth: ClientAuth = "body",
        body: BodyEncoding = "form",
        extra: Mapping[str, str] | None = None,
        private_key: object = None,
        key_id: str | None = None,
        **options: Unpack[AuthOptions],
    ) -> None:
        if client_auth in ("body", "basic", "client_secret_jwt") and (
            not isinstance(client_secret, str) or not client_secret
        ):
            raise ConfigurationError(
                f"client_auth={client_auth!r} needs client_secret= as a non-empty string (in a "
                "configuration file: client_secret = … or client_secret_env = 'VARIABLE'); a "
                "client without a secret uses client_auth='private_key_jwt' or a TLS method"
            )
        require_tls_certificate(client_auth, options)
        grant = ClientCredentialsGrant(
            token_url=require_text("token_url", token_url),
            client=client_for(
                client_id, client_secret, client_auth, body, private_key, key_id, options
            ),
            scope=scope_text(scope),
            audience=audience,
            extra=dict(extra or {}),
        )
        super().__init__(grant, **options)
        self._client_id = client_id

    @classmethod
    def from_issuer(
        cls,
        issuer: str,
        client_id: str,
        client_secret: str | None = None,
        **kwargs: Any,
    ) -> Self:
        """The same object, its token endpoint read from the issuer's metadata on the first
        token call (OpenID Connect Discovery, else RFC 8414); the constructor does no I/O.

        Raises:
            DiscoveryError: on the first token call, when no metadata document for exactly
                this issuer was found; the message names the URLs tried.
        """
        return _from_issuer(cls, issuer, client_id, client_secret, **kwargs)

    def _describe(self) -> str:
        return f"{super()._describe()} client_id={self._client_id!r}"


def _from_issuer(cls: type[_Auth], issuer: str, *args: Any, **kwargs: Any) -> _Auth:
    auth = cls.__new__(cls)
    auth._discover_from = require_text("issuer", issuer)
    init: Any = cls.__init__  # the subclass's own signature, with the issuer as its URL
    init(auth, issuer, *args, **kwargs)
    return auth


class OAuth2Password(TokenAuth):
    """OAuth 2 resource owner password grant (RFC 6749 §4.3), renewed by refresh token.

    When the server refuses the refresh token, it logs in again with the password once.

    Args:
        token_url: the token endpoint.
        client_id: the client the user logs in through.
        username: the user's name.
        password: the user's password.
        client_secret: the client's secret, for a confidential client.
        scope: a space-separated string or a sequence of scopes.
        client_auth: any method `OAuth2ClientCredentials` takes (`"body"` by default).
        body: `"form"` or `"json"`.
        private_key: the client's RSA or EC private key for `client_auth="private_key_jwt"`,
            PEM or JWK.
        key_id: the `kid` of that key, when the server holds several.
        **options: the options of `TokenAuth`.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        username: str,
        password: str,
        *,
        client_secret: str | None = None,
        scope: str | Sequence[str] | None = None,
        client_auth: ClientAuth = "body",
        body: BodyEncoding = "form",
        private_key: object = None,
        key_id: str | None = None,
        **options: Unpack[AuthOptions],
    ) -> None:
        require_tls_certificate(client_auth, options)
        grant = PasswordGrant(
            token_url=require_text("token_url", token_url),
            client=client_for(
                client_id, client_secret, client_auth, body, private_key, key_id, options
            ),
            username=require_text("username", username),
            password=require_text("password", password),
            scope=scope_text(scope),
        )
        super().__init__(grant, **options)
        self._public = f"client_id={client_id!r} username={username!r}"

    @classmethod
    def from_issuer(
        cls, issuer: str, client_id: str, username: str, password: str, **kwargs: Any
    ) -> Self:
        """As the constructor, the token endpoint discovered from `issuer` on first use
        (see `OAuth2ClientCredentials.from_issuer`)."""
        return _from_issuer(cls, issuer, client_id, username, password, **kwargs)

    def _describe(self) -> str:
        return f"{super()._describe()} {self._public}"


class OAuth2RefreshToken(TokenAuth):
    """OAuth 2 refresh token grant (RFC 6749 §6) for a client that holds only a refresh token.

    Every rotated refresh token is written to the store before the new access token is used,
    and passed to `on_token`; once the store holds one, it wins over the constructor's. Use a
    `FileStore` or `RedisStore` (or `on_token`) to keep rotated tokens between runs.

    Args:
        token_url: the token endpoint.
        client_id: the client the refresh token was issued to.
        refresh_token: the refresh token to start from.
        client_secret: the client's secret, for a confidential client.
        scope: narrows the scope of the renewed token (the server may ignore it).
        client_auth: any method `OAuth2ClientCredentials` takes (`"body"` by default).
        body: `"form"` or `"json"`.
        private_key: the client's RSA or EC private key for `client_auth="private_key_jwt"`,
            PEM or JWK.
        key_id: the `kid` of that key, when the server holds several.
        **options: the options of `TokenAuth`.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        refresh_token: str,
        *,
        client_secret: str | None = None,
        scope: str | Sequence[str] | None = None,
        client_auth: ClientAuth = "body",
        body: BodyEncoding = "form",
        private_key: object = None,
        key_id: str | None = None,
        **options: Unpack[AuthOptions],
    ) -> None:
        require_tls_certificate(client_auth, options)
        grant = RefreshTokenGrant(
            token_url=require_text("token_url", token_url),
            client=client_for(
                client_id, client_secret, client_auth, body, private_key, key_id, options
            ),
            refresh_token=require_text("refresh_token", refresh_token),
            scope=scope_text(scope),
        )
        super().__init__(grant, **options)
        self._client_id = client_id

    @classmethod
    def from_issuer(cls, issuer: str, client_id: str, refresh_token: str, **kwargs: Any) -> Self:
        """As the constructor, the token endpoint discovered from `issuer` on first use
        (see `OAuth2ClientCredentials.from_issuer`)."""
        return _from_issuer(cls, issuer, client_id, refresh_token, **kwargs)

    def _describe(self) -> str:
        return f"{super()._describe()} client_id={self._client_id!r}"


class OAuth2JwtBearer(TokenAuth):
    """The JWT bearer grant (RFC 7523 §2.1): a service account signs its own assertion.

    Each token call sends a fresh assertion signed with `private_key` (`iss` = `issuer`,
    `sub` = `subject`, `aud` = `audience` or the token endpoint, a 60 s `exp`, a new `jti`);
    renewal repeats the grant. Needs `pip install 'renewauth[jwt]'`.

    Args:
        token_url: the token endpoint.
        issuer: who signs (usually the service account or client id).
        subject: whom the token is for (the service account, or a user it acts for).
        private_key: an RSA or EC private key, PEM or JWK.
        audience: the assertion's `aud`, when the server wants other than the token URL.
        scope: a space-separated string or a sequence of scopes.
        key_id: the `kid` the server knows the key by.
        **options: the options of `TokenAuth`.
    """

    def __init__(
        self,
        token_url: str,
        *,
        issuer: str,
        subject: str,
        private_key: object,
        audience: str | None = None,
        scope: str | Sequence[str] | None = None,
        key_id: str | None = None,
        **options: Unpack[AuthOptions],
    ) -> None:
        if audience is not None:
            require_text("audience", audience)
        grant = JwtBearerGrant(
            token_url=require_text("token_url", token_url),
            issuer=require_text("issuer", issuer),
            subject=require_text("subject", subject),
            assertion=AssertionMaker(
                signer=load_private_key(private_key, key_id=key_id),
                clock=options.get("clock", time.time),
            ),
            audience=audience,
            scope=scope_text(scope),
            key_fingerprint=key_fingerprint(private_key),
        )
        super().__init__(grant, **options)
        self._public = f"issuer={issuer!r} subject={subject!r}"

    def _describe(self) -> str:
        return f"{super()._describe()} {self._public}"


class BearerToken(TokenAuth):
    """A fixed bearer token with the same interface, for tests and APIs without renewal.

    A 401 goes back to the caller as it is: there is nothing to renew. The token is kept
    in a store of its own, never in the shared one.

    Args:
        token: the access token to send.
    """

    def __init__(self, token: str) -> None:
        grant = StaticGrant(token=Token(access_token=require_text("token", token)))
        super().__init__(grant, store=MemoryStore(maxsize=1))

    def _describe(self) -> str:
        return "static"
