"""Corporate networks: the token call's trust store (`verify=`, `SSL_CERT_FILE`,
`REQUESTS_CA_BUNDLE`), its route (`proxy=`, `HTTPS_PROXY`, `NO_PROXY`) and its client
certificate, over real TLS on loopback made by trustme, through a real CONNECT proxy; and
what a token call that gets no answer says: why (a name that does not resolve, a refused
port, an untrusted certificate), with the low-level error as its cause and no secret behind."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import pathlib
import re
import select
import socket
import socketserver
import ssl
import threading
import types
from collections.abc import Iterator, Mapping
from urllib.parse import quote, quote_plus

import httpcore
import httpx
import pytest
import trustme

from renewauth import (
    ConfigurationError,
    InsecureTransportError,
    MemoryStore,
    OAuth2ClientCredentials,
    TokenEndpointUnavailable,
)
from renewauth._urls import is_loopback_host
from renewauth.flows import TokenRequest
from renewauth.transports.httpx_sender import HttpxSender

from .helpers import send
from .oidc_fixture import SECRET, Oidc

CA_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class ConnectProxy(socketserver.ThreadingTCPServer):
    """A tiny HTTP CONNECT proxy on loopback that records every tunnel it opens."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Tunnel)
        self.tunnels: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Tunnel(socketserver.BaseRequestHandler):
    server: ConnectProxy

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or not is_loopback_host(host):  # loopback only, ever
            self.request.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        with self.server.lock:
            self.server.tunnels.append(target)
        upstream = socket.create_connection((host.strip("[]"), int(port)))
        self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        sockets = [self.request, upstream]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 30)
                if not readable:
                    return
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (upstream if source is self.request else self.request).sendall(data)
        finally:
            upstream.close()


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    server = ConnectProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*CA_VARIABLES, "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def auth_for(oidc: Oidc, **options: object) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(
        oidc.token_url, "post", SECRET, store=MemoryStore(), retries=0, **options
    )


def test_token_call_trusts_custom_ca_only_when_verify_names_it(
    oidc: Oidc, clean_environment: pytest.MonkeyPatch
) -> None:
    with pytest.raises(TokenEndpointUnavailable, match="could not be reached"):
        auth_for(oidc).get_token()  # certifi's bundle does not know the test CA
    assert auth_for(oidc, verify=oidc.ca).get_token().access_token
    context = ssl.create_default_context(cafile=oidc.ca)
    assert auth_for(oidc, verify=context).get_token().access_token


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_token_call_trusts_ca_bundle_from_environment_when_variable_is_set(
    oidc: Oidc, clean_environment: pytest.MonkeyPatch, variable: str
) -> None:
    clean_environment.setenv(variable, oidc.ca)
    assert auth_for(oidc).get_token().access_token


def test_ssl_cert_file_wins_over_requests_ca_bundle_when_both_are_set(
    oidc: Oidc, clean_environment: pytest.MonkeyPatch, tmp_path: object
) -> None:
    import certifi

    clean_environment.setenv("SSL_CERT_FILE", certifi.where())  # does not know the test CA
    clean_environment.setenv("REQUESTS_CA_BUNDLE", oidc.ca)
    with pytest.raises(TokenEndpointUnavailable):
        auth_for(oidc).get_token()


def test_environment_ca_bundle_raises_configuration_error_when_path_is_missing(
    oidc: Oidc, clean_environment: pytest.MonkeyPatch
) -> None:
    clean_environment.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")
    with pytest.raises(ConfigurationError, match=r"SSL_CERT_FILE names '/nonexistent/ca\.pem'"):
        auth_for(oidc).get_token()


def test_verify_false_is_accepted_only_when_token_endpoint_is_loopback(
    oidc: Oidc, clean_environment: pytest.MonkeyPatch
) -> None:
    assert auth_for(oidc, verify=False).get_token().access_token
    with pytest.raises(InsecureTransportError, match="verify=False is refused"):
        OAuth2ClientCredentials("https://idp.example.com/token", "app", SECRET, verify=False)
    # A discovered endpoint is only known at the call: the sender refuses it there, unsent.
    request = TokenRequest(url="https://idp.example.com/token", body=b"")
    with pytest.raises(InsecureTransportError):
        HttpxSender(verify=False).send(request, timeout=1)


def test_token_call_goes_through_proxy_when_proxy_is_given(
    oidc: Oidc, proxy: ConnectProxy, clean_environment: pytest.MonkeyPatch
) -> None:
    assert auth_for(oidc, verify=oidc.ca, proxy=proxy.url).get_token().access_token
    assert proxy.tunnels == [oidc.issuer.removeprefix("https://")]


def test_token_call_goes_through_https_proxy_from_environment_unless_no_proxy_matches(
    oidc: Oidc, proxy: ConnectProxy, clean_environment: pytest.MonkeyPatch
) -> None:
    clean_environment.setenv("HTTPS_PROXY", proxy.url)
    assert auth_for(oidc, verify=oidc.ca).get_token().access_token
    assert proxy.tunnels == [oidc.issuer.removeprefix("https://")]
    clean_environment.setenv("NO_PROXY", "127.0.0.1")
    assert auth_for(oidc, verify=oidc.ca).get_token().access_token
    assert len(proxy.tunnels) == 1  # the second call went direct, as NO_PROXY says


def test_token_call_fails_unreachable_not_direct_when_proxy_is_down(
    oidc: Oidc, clean_environment: pytest.MonkeyPatch
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    auth = auth_for(oidc, verify=oidc.ca, proxy=f"http://127.0.0.1:{port}")
    with pytest.raises(TokenEndpointUnavailable):
        auth.get_token()  # never silently around the proxy


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"verify": 3}, "verify= must be"),
        ({"cert": 3}, "cert= must be"),
        ({"proxy": "proxy.example.com"}, "proxy= must be a proxy URL"),
        ({"verify": ssl.create_default_context(), "cert": "c.pem"}, "not both"),
    ],
)
def test_network_options_raise_configuration_error_when_malformed(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        OAuth2ClientCredentials("https://idp.example.com/token", "app", SECRET, **options)  # type: ignore[arg-type]


def test_async_token_call_uses_proxy_and_custom_ca_when_both_are_given(
    oidc: Oidc, proxy: ConnectProxy, clean_environment: pytest.MonkeyPatch
) -> None:
    import asyncio

    auth = auth_for(oidc, verify=oidc.ca, proxy=proxy.url)
    assert asyncio.run(auth.aget_token()).access_token
    assert proxy.tunnels == [oidc.issuer.removeprefix("https://")]


def test_pickled_auth_keeps_route_and_trust_store_when_copied(
    oidc: Oidc, proxy: ConnectProxy, clean_environment: pytest.MonkeyPatch
) -> None:
    import pickle

    auth = OAuth2ClientCredentials.from_issuer(
        oidc.issuer, "post", SECRET, store=MemoryStore(), verify=oidc.ca, proxy=proxy.url
    )
    copy = pickle.loads(pickle.dumps(auth))  # noqa: S301 - our own object
    assert copy.get_token().access_token  # discovered again, through the proxy, same CA
    assert proxy.tunnels == [oidc.issuer.removeprefix("https://")] * 2


def test_pickling_refuses_private_keys_and_ssl_contexts() -> None:
    import pickle

    from cryptography.hazmat.primitives.asymmetric import ec

    from .oidc_fixture import pem

    key = pem(ec.generate_private_key(ec.SECP256R1()))
    holders = [
        OAuth2ClientCredentials(
            "https://idp.example.com/t", "app", client_auth="private_key_jwt", private_key=key
        ),
        OAuth2ClientCredentials("https://idp.example.com/t", "app", SECRET, dpop=True),
        OAuth2ClientCredentials(
            "https://idp.example.com/t", "app", SECRET, verify=ssl.create_default_context()
        ),
    ]
    for auth in holders:
        with pytest.raises(ConfigurationError, match="cannot be pickled"):
            pickle.dumps(auth)


# --- a token call that gets no answer: the message says why, the cause is kept, cleanly ------

UNRESOLVABLE = "https://nonexistent.invalid/oauth/token"  # RFC 2606: .invalid never resolves
CANARY_SECRET = "network-canary-secret+/:%="


def api_of(token_url: str) -> str:
    return token_url.replace("/oauth/token", "/api/")


def canary_auth(token_url: str, **options: object) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(
        token_url,
        "canary-client",
        CANARY_SECRET,
        store=MemoryStore(),
        retries=0,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def refused_url() -> str:
    """A token URL on a loopback port that was bound and closed: connecting is refused."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    return f"http://127.0.0.1:{port}/oauth/token"


class _Handshake(socketserver.BaseRequestHandler):
    server: UntrustedTlsServer

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # the client refuses the certificate: SSLError
            self.server.context.wrap_socket(self.request, server_side=True).close()


class UntrustedTlsServer(socketserver.ThreadingTCPServer):
    """A TLS server on loopback whose certificate no client trusts by default: a trustme
    CA's, either issued for 127.0.0.1 or the CA's own (self-signed)."""

    daemon_threads = True

    def __init__(self, *, self_signed: bool, directory: pathlib.Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handshake)
        ca = trustme.CA()
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if self_signed:
            ca.cert_pem.write_to_path(str(directory / "ca.pem"))
            ca.private_key_pem.write_to_path(str(directory / "ca.key"))
            self.context.load_cert_chain(directory / "ca.pem", directory / "ca.key")
            self.reason = "self-signed certificate"
        else:
            ca.issue_cert("127.0.0.1").configure_cert(self.context)
            self.reason = "unable to get local issuer certificate"

    @property
    def token_url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}/oauth/token"


@contextlib.contextmanager
def untrusted_tls_server(
    *, self_signed: bool, directory: pathlib.Path
) -> Iterator[UntrustedTlsServer]:
    server = UntrustedTlsServer(self_signed=self_signed, directory=directory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_refused_token_call_says_connection_refused_and_keeps_the_refusal_as_cause(
    kind: str, refused_url: str, clean_environment: pytest.MonkeyPatch
) -> None:
    origin = refused_url.removesuffix("/oauth/token")
    expected = f"connection refused by {origin}; check the network and token_url="
    with pytest.raises(TokenEndpointUnavailable, match=re.escape(expected)) as caught:
        send(kind, canary_auth(refused_url), api_of(refused_url))
    assert type(caught.value.__cause__) is ConnectionRefusedError
    assert caught.value.origin == origin  # as every TokenRequestError names its endpoint


def test_unresolvable_token_host_is_named_and_the_resolver_error_kept_as_cause(
    kind: str, clean_environment: pytest.MonkeyPatch
) -> None:
    # Fails fast with or without DNS: getaddrinfo answers "not known" or "temporary failure".
    with pytest.raises(
        TokenEndpointUnavailable, match=r"could not resolve nonexistent\.invalid"
    ) as caught:
        send(kind, canary_auth(UNRESOLVABLE), api_of(UNRESOLVABLE))
    assert caught.value.args[0].endswith(
        "check the network and token_url=, or raise timeout= if it is slow"
    )
    assert type(caught.value.__cause__) is socket.gaierror


@pytest.mark.parametrize("self_signed", [False, True], ids=["unknown-ca", "self-signed"])
def test_untrusted_certificate_says_why_openssl_refused_it_and_how_to_trust_it(
    kind: str, self_signed: bool, tmp_path: pathlib.Path, clean_environment: pytest.MonkeyPatch
) -> None:
    with untrusted_tls_server(self_signed=self_signed, directory=tmp_path) as server:
        expected = (
            f"certificate not trusted ({server.reason}); pass verify= the CA bundle that "
            "signed the server's certificate, or name it in SSL_CERT_FILE"
        )
        with pytest.raises(TokenEndpointUnavailable, match=re.escape(expected)) as caught:
            send(kind, canary_auth(server.token_url), api_of(server.token_url))
    cause = caught.value.__cause__
    assert type(cause) is ssl.SSLCertVerificationError
    assert cause.verify_message == server.reason
    assert cause.verify_code == (18 if self_signed else 20)  # OpenSSL's X509_V_ERR_* codes


@pytest.mark.parametrize("route", ["proxy=", "HTTPS_PROXY"])
def test_refusing_proxy_is_named_as_what_refused_the_token_call(
    route: str, refused_url: str, clean_environment: pytest.MonkeyPatch
) -> None:
    proxy = refused_url.removesuffix("/oauth/token")
    options = {"proxy": proxy} if route == "proxy=" else {}
    if route == "HTTPS_PROXY":
        clean_environment.setenv("HTTPS_PROXY", proxy)
    expected = (
        f"token endpoint https://nonexistent.invalid through the proxy {proxy} could not be "
        f"reached: connection refused by {proxy}; check the proxy (proxy=, HTTPS_PROXY)"
    )
    with pytest.raises(TokenEndpointUnavailable, match=re.escape(expected)) as caught:
        canary_auth(UNRESOLVABLE, **options).get_token()
    assert type(caught.value.__cause__) is ConnectionRefusedError


def test_callers_that_waited_for_the_failed_renewal_see_the_same_cause(
    refused_url: str, clean_environment: pytest.MonkeyPatch
) -> None:
    auth = canary_auth(refused_url)

    async def four_callers() -> list[BaseException]:
        # The first leads the renewal (as a task of its own, scheduled after the other
        # three), so the other three are waiters of its flight and get copies of its error.
        return await asyncio.gather(*(auth.aget_token() for _ in range(4)), return_exceptions=True)

    errors = asyncio.run(four_callers())
    assert all(isinstance(error, TokenEndpointUnavailable) for error in errors)
    assert len({id(error) for error in errors}) == 4
    assert [type(error.__cause__) for error in errors] == [ConnectionRefusedError] * 4


def reachable_from(error: BaseException) -> Iterator[object]:
    """Everything a crash reporter could read off `error`: each exception along every
    `__cause__` and `__context__`, their args and attributes, the local variables of every
    frame of their tracebacks (but the test's own), the items of the containers among those,
    and the body and headers of any httpx request among them."""
    seen: set[int] = set()
    pending: list[object] = [error]
    while pending:
        item = pending.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, BaseException):
            pending += [item.__cause__, item.__context__, *item.args, *vars(item).values()]
            trace = item.__traceback__
            while trace is not None:
                if trace.tb_frame.f_code.co_filename != __file__:  # not the test's own frame
                    pending.append(trace.tb_frame)
                trace = trace.tb_next
        elif isinstance(item, types.FrameType):
            pending += list(item.f_locals.values())
        elif isinstance(item, httpx.Request):  # what a leaked token request would show
            pending += [item.headers.raw, item.content]
        elif isinstance(item, Mapping):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set | frozenset):
            pending += list(item)


@pytest.mark.parametrize("client_auth", ["body", "basic"])
@pytest.mark.parametrize("endpoint", ["refused", "unresolvable", "untrusted"])
def test_unreachable_error_chain_holds_no_secret_and_nothing_of_the_token_request(
    kind: str,
    endpoint: str,
    client_auth: str,
    refused_url: str,
    tmp_path: pathlib.Path,
    clean_environment: pytest.MonkeyPatch,
) -> None:
    """httpx's exception holds the token request and its body; only a clean copy of the
    low-level error may be reachable from what the caller catches."""
    with contextlib.ExitStack() as stack:
        token_url = {"refused": refused_url, "unresolvable": UNRESOLVABLE}.get(endpoint)
        if token_url is None:
            server = stack.enter_context(
                untrusted_tls_server(self_signed=False, directory=tmp_path)
            )
            token_url = server.token_url
        with pytest.raises(TokenEndpointUnavailable) as caught:
            send(kind, canary_auth(token_url, client_auth=client_auth), api_of(token_url))
    error = caught.value
    assert isinstance(error.__cause__, OSError)  # the cause is kept...
    basic = base64.b64encode(f"canary-client:{quote_plus(CANARY_SECRET)}".encode()).decode()
    secrets = {CANARY_SECRET, quote_plus(CANARY_SECRET), quote(CANARY_SECRET, safe=""), basic}
    texts: list[str] = []
    of_the_token_call: list[str] = []
    for item in reachable_from(error):
        if isinstance(item, httpx.HTTPError | httpcore.ConnectError | httpcore.TimeoutException):
            of_the_token_call.append(repr(item))  # ...but never httpx's own exception
        if isinstance(item, httpx.Request | httpcore.Request) and "/oauth/token" in str(item.url):
            of_the_token_call.append(repr(item))
        if isinstance(item, bytes):
            texts.append(item.decode("latin-1"))
        texts += [repr(item), str(item)]
    assert [text[:200] for secret in secrets for text in texts if secret in text] == []
    assert of_the_token_call == []
