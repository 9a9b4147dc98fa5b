"""Type-checked by `mypy --strict` in CI, never run: the public API as users write it."""

from __future__ import annotations

import httpx
import requests

from renewauth import (
    BearerToken,
    MemoryStore,
    OAuth2ClientCredentials,
    OAuth2Password,
    OAuth2RefreshToken,
    Token,
    TokenAuth,
    TokenStore,
)


def remember(token: Token) -> None:
    print(token.expires_at)


def every_class_plugs_into_requests_and_httpx() -> None:
    store: TokenStore = MemoryStore()
    auths: list[TokenAuth] = [
        OAuth2ClientCredentials(
            "https://idp.example.com/token", "id", "secret", scope=["a", "b"], store=store
        ),
        OAuth2Password(
            "https://idp.example.com/token", "id", "user", "pw", leeway=10.0, on_token=remember
        ),
        OAuth2RefreshToken(
            "https://idp.example.com/token",
            "id",
            "refresh",
            client_auth="basic",
            client_secret="s",
            retry_statuses=(401, 403),
        ),
        BearerToken("static"),
    ]
    for auth in auths:
        session = requests.Session()
        session.auth = auth
        with httpx.Client(auth=auth) as client:
            client.get("https://api.example.com/")
        token: Token = auth.get_token()
        cached: Token | None = auth.token
        auth.invalidate()
        print(token, cached)


async def the_same_object_plugs_into_httpx2_and_aiohttp(auth: OAuth2ClientCredentials) -> None:
    import aiohttp
    import httpx2

    with httpx2.Client(auth=auth) as client:
        client.get("https://api.example.com/")
    async with httpx2.AsyncClient(auth=auth) as async_client:
        await async_client.get("https://api.example.com/")
    async with aiohttp.ClientSession(middlewares=(auth,)) as session:
        await session.get("https://api.example.com/")


async def async_use(auth: OAuth2ClientCredentials) -> Token:
    async with httpx.AsyncClient(auth=auth) as client:
        await client.get("https://api.example.com/")
    await auth.ainvalidate()
    url: str = auth.token_url
    statuses: frozenset[int] = auth.retry_statuses
    store: TokenStore = auth.store
    idle: float | None = auth.refresh_idle_timeout
    print(url, statuses, store, idle)
    return await auth.aget_token()


def shared_stores_take_bounded_redis_options() -> None:
    from renewauth import FileStore, RedisStore

    stores: list[TokenStore] = [
        FileStore("~/.cache/renewauth"),
        RedisStore("redis://127.0.0.1:6379/0", lease=10.0, socket_timeout=2.0, connect_timeout=2.0),
    ]
    print(stores)


def technical_user_for_months() -> None:
    from renewauth import events

    def show(event: events.Event) -> None:
        if isinstance(event, events.Renewed):
            print(event.grant, event.source, event.duration, event.expires_in)
        elif isinstance(event, events.StepUpRequired):
            asked: tuple[str, ...] = event.acr_values
            max_age: int | None = event.max_age
            print(event.origin, event.status, asked, max_age)

    auth = OAuth2RefreshToken(
        "https://idp.example.com/token",
        "id",
        "refresh",
        refresh_idle_timeout=30 * 86400.0,
        on_event=show,
    )
    unsubscribe = events.subscribe(show)
    renewed: bool = auth.keepalive()
    token: Token = auth.get_token()
    used: float | None = token.refresh_used_at
    ends: float | None = token.refresh_ends_at(86400.0)
    print(renewed, used, ends)
    unsubscribe()


async def akeepalive_returns_a_bool(auth: OAuth2RefreshToken) -> bool:
    return await auth.akeepalive()


def first_consent() -> None:
    from renewauth import (
        AccessDenied,
        ConsentExpired,
        DevicePrompt,
        LoginRequired,
        OAuth2AuthorizationCode,
        OAuth2DeviceCode,
    )

    browser_login = OAuth2AuthorizationCode(
        "my-cli", issuer="https://idp.example.com", scope=["openid", "offline_access"]
    )
    first: Token = browser_login.login(print, open_browser=False, timeout=120.0)
    remember(first)

    def show(prompt: DevicePrompt) -> None:
        print(prompt.verification_uri, prompt.user_code, prompt.verification_uri_complete)

    device = OAuth2DeviceCode.from_issuer("https://idp.example.com", "my-box", store=MemoryStore())
    try:
        remember(device.login(show, sleep=lambda seconds: None))
    except (AccessDenied, ConsentExpired) as exc:
        print(exc.error, exc.error_description, exc.origin)
    session = requests.Session()
    session.auth = device
    gateway = OAuth2AuthorizationCode(
        "my-cli",
        authorization_url="https://idp.example.com/authorize",
        token_url="https://idp.example.com/token",
        token_headers={"x-api-key": "…"},
    )
    remember(gateway.login(timeout=60.0))
    from renewauth.providers import VanMarcke

    end_user_token: str = VanMarcke.log_in_end_user(
        client_id="…", api_key="…", show=print, open_browser=False
    )
    print(len(end_user_token))
    with httpx.Client(auth=browser_login) as client:
        try:
            client.get("https://api.example.com/")
        except LoginRequired as exc:
            print(exc)  # says: renewauth login --config FILE NAME, or .login()
