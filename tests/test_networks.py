"""Corporate networks: the token call's trust store (`verify=`, `SSL_CERT_FILE`,
`REQUESTS_CA_BUNDLE`), its route (`proxy=`, `HTTPS_PROXY`, `NO_PROXY`) and its client
certificate, over real TLS on loopback made by trustme, through a real CONNECT proxy."""

from __future__ import annotations

import select
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator

import pytest

from renewauth import (
    ConfigurationError,
    InsecureTransportError,
    MemoryStore,
    OAuth2ClientCredentials,
    TokenEndpointUnavailable,
)
from renewauth._urls import is_loopback_host
from renewauth.flows import TokenRequest
from renewauth.transports.httpx import HttpxSender

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
