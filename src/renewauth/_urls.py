"""URL facts every layer needs: origins and loopback hosts. Pure functions, no I/O."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from .errors import ConfigurationError, InsecureTransportError

__all__ = ["is_loopback_host", "origin_of", "require_secure_url"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str:
    """The origin (`scheme://host[:port]`, default port left out) of an absolute URL.

    Userinfo and path never appear in it, so an origin is safe to log and to put in errors.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def is_loopback_host(host: str) -> bool:
    """Whether `host` names this machine: `localhost`, 127.0.0.0/8 or ::1."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_secure_url(url: str, *, what: str, allow_insecure_http: bool) -> None:
    """Refuse a URL that would carry credentials in clear text off this machine.

    Raises:
        ConfigurationError: the URL is not an absolute http(s) URL.
        InsecureTransportError: plain http to a host that is not loopback, not allowed.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{what} must be an absolute http(s) URL such as "
            f"'https://idp.example.com/oauth/token', got one with scheme {parts.scheme!r}"
        )
    if (
        parts.scheme.lower() == "http"
        and not allow_insecure_http
        and not is_loopback_host(parts.hostname)
    ):
        raise InsecureTransportError(
            f"{what} {origin_of(url)} uses plain http, which would send credentials in clear "
            "text; use https, or pass allow_insecure_http=True if this network is trusted"
        )
