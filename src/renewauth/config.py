"""The TOML configuration that `renewauth run` and `renewauth token` read.

One `[auth.NAME]` table per auth object: a `provider`, the provider's constructor arguments
by their parameter names, the common options, the URL `prefixes` it serves and an optional
`store`. Any secret may name an environment variable instead (`client_secret_env = "NAME"`).
Here a file becomes `Entry` values, or a `ConfigurationError` naming the file, the entry and
the fix. No secret value enters a message, and a file that holds a secret itself must be
private to its owner. Nothing here sends a request: constructors do no I/O.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ._routing import DEFAULT_EXISTING_BEARER, ExistingBearer, existing_bearer_of, prefix_parts
from ._urls import is_loopback_host, origin_of
from .auth import OAuth2ClientCredentials, OAuth2Password, OAuth2RefreshToken, TokenAuth
from .consent import OAuth2AuthorizationCode, OAuth2DeviceCode
from .errors import ConfigurationError, InsecureTransportError
from .providers import Keycloak, OrderCloud, Shopware, VanMarcke, Vendorlink
from .stores import FileStore, RedisStore, TokenStore
from .stores import default_store as process_store
from .stores._durable import state_directory

__all__ = ["Entry", "load_config", "prefix_hints"]

_PROVIDERS: dict[str, Callable[..., TokenAuth]] = {
    "oauth2-client-credentials": OAuth2ClientCredentials,
    "oauth2-password": OAuth2Password,
    "oauth2-refresh-token": OAuth2RefreshToken,
    "oauth2-authorization-code": OAuth2AuthorizationCode,
    "oauth2-device-code": OAuth2DeviceCode,
    "keycloak": Keycloak,
    "ordercloud": OrderCloud,
    "shopware": Shopware,
    "vendorlink": Vendorlink,
    "vanmarcke": VanMarcke,
}
_SECRETS = ("password", "client_secret", "refresh_token", "api_key", "private_key")
_OPTIONS = (
    "leeway",
    "timeout",
    "retries",
    "retry_statuses",
    "allow_insecure_http",
    "refresh_idle_timeout",
)
_ENTRY_KEYS = ("provider", "prefixes", "store", "store_path", "existing_bearer")
# Constructor parameters the loader supplies itself, never read from the file.
_NOT_FROM_FILE = frozenset({"self", "store", "on_token", "on_event", "clock"})
_EXAMPLE = (
    'an entry looks like: [auth.pricing] provider = "oauth2-client-credentials", '
    'token_url = "https://idp.example.com/oauth/token", client_id = "reporting", '
    'client_secret_env = "PRICING_SECRET", prefixes = ["https://api.example.com/v1/"]'
)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_array_of(value: object, kind: type) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, kind) and not isinstance(item, bool) for item in value
    )


_STRING: tuple[str, Callable[[object], bool]] = ("a string", lambda value: isinstance(value, str))
_BOOLEAN: tuple[str, Callable[[object], bool]] = (
    "true or false",
    lambda value: isinstance(value, bool),
)
_TABLE_OF_STRINGS: tuple[str, Callable[[object], bool]] = (
    "a table of strings",
    lambda value: isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
)
# The TOML type each key takes: a string (`_STRING`) unless listed here.
_KINDS: dict[str, tuple[str, Callable[[object], bool]]] = {
    "scope": (
        "a string or an array of strings",
        lambda value: isinstance(value, str) or _is_array_of(value, str),
    ),
    "extra": _TABLE_OF_STRINGS,
    "token_headers": _TABLE_OF_STRINGS,
    "anonymous": _BOOLEAN,
    "allow_insecure_http": _BOOLEAN,
    "leeway": ("a number of seconds", _is_number),
    "timeout": ("a number of seconds", _is_number),
    "refresh_idle_timeout": ("a number of seconds", _is_number),
    "retries": ("a whole number", lambda value: type(value) is int),
    "retry_statuses": (
        "an array of HTTP statuses such as [401]",
        lambda value: _is_array_of(value, int),
    ),
    "prefixes": ("an array of URL prefixes", lambda value: _is_array_of(value, str)),
}
_TOML_TYPES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
_TOML_TYPES |= {list: "an array", dict: "a table"}


@dataclass(frozen=True, slots=True)
class Entry:
    """One `[auth.NAME]` table, built.

    Attributes:
        name: the entry's name, as `renewauth token NAME` takes it.
        auth: the constructed auth object.
        prefixes: the URL prefixes it serves; empty for an entry used only by `token`.
        existing_bearer: what retrofit does with a `Bearer` token the program sends itself
            under these prefixes: `"keep-until-401"` (the default), `"keep"` or `"replace"`.
    """

    name: str
    auth: TokenAuth
    prefixes: tuple[str, ...]
    existing_bearer: ExistingBearer = DEFAULT_EXISTING_BEARER


def load_config(
    path: str | os.PathLike[str],
    *,
    default_store: str = "file",
    environ: Mapping[str, str] | None = None,
) -> dict[str, Entry]:
    """Read a configuration file and build one auth object per `[auth.NAME]` entry.

    Args:
        path: the TOML file.
        default_store: the store of entries without `store`: `"file"` (a `FileStore` in
            `store_path`, else in renewauth's state directory, the durable default of the
            Python API: `$RENEWAUTH_STATE_DIR/tokens`, by default
            `~/.local/state/renewauth/tokens` on Linux), `"memory"` (the process-wide
            store) or a `redis://` / `rediss://` URL. Entries with the same store spec
            share one store object.
        environ: where `*_env` keys are looked up; `os.environ` by default.

    Returns:
        The entries by name, in the file's order.

    Raises:
        ConfigurationError: the file is missing, unreadable, not TOML, open to other users
            while holding a secret, or an entry is invalid; the message names the file, the
            entry and the fix.
    """
    environ = os.environ if environ is None else environ
    where = os.fspath(path)
    document, mode = _read(where)
    unknown = sorted(set(document) - {"auth", "store_path"})
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown top-level key {unknown[0]!r}; put entries under [auth.NAME] "
            "and keep only store_path at the top"
        )
    tables = document.get("auth")
    if not isinstance(tables, dict) or not tables:
        raise ConfigurationError(f"{where}: no [auth.NAME] entries; {_EXAMPLE}")
    flat = [key for key, value in tables.items() if not isinstance(value, dict)]
    if flat:
        # `[auth]` with `provider = …` straight under it: the keys belong to a named entry.
        raise ConfigurationError(
            f"{where}: [auth] holds {flat[0]!r} itself; give the entry a name and put its keys "
            "under [auth.NAME] (for example [auth.orders]), one table per auth object"
        )
    for name, table in tables.items():
        _refuse_open_secrets(where, name, table, mode)
    stores: dict[tuple[object, str], TokenStore] = {}
    return {
        name: _build(where, name, table, document, default_store, environ, stores)
        for name, table in tables.items()
    }


def _read(where: str) -> tuple[dict[str, object], int]:
    """The parsed document and the file's permission bits."""
    try:
        with open(where, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            return tomllib.load(file), mode
    except FileNotFoundError:
        raise ConfigurationError(
            f"{where}: no such configuration file; create it or pass --config PATH"
        ) from None
    except OSError as exc:
        raise ConfigurationError(
            f"{where}: cannot read the configuration ({exc.strerror}); pass a readable file"
        ) from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{where}: not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(
            f"{where}: invalid TOML: {exc}; fix the syntax there (see https://toml.io)"
        ) from exc


def _refuse_open_secrets(where: str, name: str, table: dict[str, object], mode: int) -> None:
    """Refuse a secret written in a file that group or others may read or change."""
    if os.name != "posix" or not mode & 0o077:
        return
    held = [key for key in _SECRETS if key in table]
    store = table.get("store")
    with contextlib.suppress(ValueError):  # an unparsable URL is refused later
        if isinstance(store, str) and urlsplit(store).password is not None:
            held.append("store")
    if held:
        fix = f"run: chmod 600 {where}"
        if held[0] != "store":
            fix += f", or set {held[0]}_env = 'VARIABLE' in place of {held[0]}"
        raise ConfigurationError(
            f"{where} [auth.{name}]: holds {held[0]} itself but the file is open to other "
            f"users (mode {mode & 0o777:o}); {fix}"
        )


def _parameters(factory: Callable[..., TokenAuth]) -> dict[str, bool]:
    """The constructor's parameters the file may give, each with whether it is required."""
    return {
        name: parameter.default is parameter.empty
        for name, parameter in inspect.signature(factory).parameters.items()
        if name not in _NOT_FROM_FILE
        and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
    }


def _build(  # noqa: PLR0917 - one private call site
    where: str,
    name: str,
    table: dict[str, object],
    document: dict[str, object],
    default_store: str,
    environ: Mapping[str, str],
    stores: dict[tuple[object, str], TokenStore],
) -> Entry:
    def fail(problem: str) -> ConfigurationError:
        return ConfigurationError(f"{where} [auth.{name}]: {problem}")

    provider = table.get("provider")
    if not isinstance(provider, str) or provider not in _PROVIDERS:
        given = "no provider" if provider is None else "an unknown provider"
        given = f"unknown provider {provider!r}" if isinstance(provider, str) else given
        raise fail(f"{given}; set provider to one of {', '.join(_PROVIDERS)}")
    factory = _PROVIDERS[provider]
    parameters = _parameters(factory)
    accepted = list(parameters)
    if provider == "keycloak":  # a portal shows the full token URL: accept it instead
        accepted.insert(2, "token_url")
        if "token_url" in table:
            if "server_url" in table or "realm" in table:
                raise fail("give either token_url or server_url and realm, not both")
            factory = Keycloak.from_token_url
            parameters = _parameters(factory)
    allowed = [*_ENTRY_KEYS, *accepted, *_OPTIONS]
    allowed += [f"{key}_env" for key in _SECRETS if key in parameters]
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise fail(
                f"unknown key {key!r} for {provider}; {hint}valid keys: {', '.join(allowed)}"
            )
    arguments: dict[str, object] = {}
    for key, value in table.items():
        if key in _ENTRY_KEYS:
            continue
        if key.endswith("_env"):
            secret = key.removesuffix("_env")
            if secret in table:
                raise fail(f"both {secret} and {key} are set; keep one of them")
            arguments[secret] = _from_environment(fail, key, value, environ)
            continue
        kind, check = _KINDS.get(key, _STRING)
        if not check(value):
            raise fail(
                f"{key} must be {kind}, got {_TOML_TYPES.get(type(value), 'a date or time')}"
            )
        arguments[key] = tuple(value) if isinstance(value, list) else value
    missing = [key for key, required in parameters.items() if required and key not in arguments]
    if missing:
        first = missing[0]
        how = f"{first} = …" + (f" or {first}_env = 'VARIABLE'" if first in _SECRETS else "")
        if provider == "keycloak" and first == "server_url":
            how = "server_url = … and realm = …, or token_url = …"
        raise fail(f"{provider} needs {', '.join(missing)}; add {how} to the entry")
    prefixes = _prefixes(fail, table.get("prefixes", []))
    store = _store(fail, where, table, document, default_store, environ, stores)
    try:
        auth = factory(**arguments, store=store)
    except (ConfigurationError, InsecureTransportError) as exc:
        raise fail(str(exc)) from exc
    return Entry(
        name=name,
        auth=auth,
        prefixes=prefixes,
        existing_bearer=_existing_bearer(fail, table),
    )


def _from_environment(
    fail: Callable[[str], ConfigurationError],
    key: str,
    variable: object,
    environ: Mapping[str, str],
) -> str:
    if not isinstance(variable, str) or not variable or "=" in variable or "\0" in variable:
        raise fail(f"{key} must name an environment variable, such as {key.upper()!r}")
    value = environ.get(variable)
    if not value:
        raise fail(
            f"{key} names the environment variable {variable}, which is unset or empty; "
            f"export {variable} before running"
        )
    return value


def _existing_bearer(
    fail: Callable[[str], ConfigurationError], table: dict[str, object]
) -> ExistingBearer:
    mode = existing_bearer_of(table.get("existing_bearer", DEFAULT_EXISTING_BEARER))
    if mode is None:
        raise fail(
            "existing_bearer must be 'keep-until-401' (the default: send the program's own "
            "Bearer token until the API rejects it), 'keep' or 'replace'"
        )
    return mode


def _prefixes(fail: Callable[[str], ConfigurationError], value: object) -> tuple[str, ...]:
    kind, check = _KINDS["prefixes"]
    if not check(value):
        raise fail(f"prefixes must be {kind}, such as ['https://api.example.com/v1/']")
    assert isinstance(value, list)  # narrowed by the check above, for mypy
    for index, prefix in enumerate(value):
        if prefix_parts(prefix) is None:  # not echoed: a URL may carry a password
            raise fail(
                f"prefixes[{index}] is not an absolute http(s) URL; write it in full, "
                "such as 'https://api.example.com/v1/'"
            )
    return tuple(value)


def _store(  # noqa: PLR0917 - one private call site
    fail: Callable[[str], ConfigurationError],
    where: str,
    table: dict[str, object],
    document: dict[str, object],
    default_store: str,
    environ: Mapping[str, str],
    stores: dict[tuple[object, str], TokenStore],
) -> TokenStore:
    """The entry's store, shared with every entry of the same spec."""
    spec = table.get("store", default_store)
    directory = table.get("store_path", document.get("store_path"))
    if directory is not None and (
        not isinstance(directory, str) or not directory or "\0" in directory
    ):
        raise fail("store_path must be a directory path, such as '~/.cache/renewauth'")
    if spec == "memory":
        return process_store()  # chosen: not the durable default a chain would get
    if spec == "file":
        if directory is None:
            # The durable default of the Python API too: a script and `renewauth run` with
            # the same credential share one store, and so one refresh-token chain.
            directory = str(state_directory() / "tokens")
        # A relative path means the same directory wherever the command is started from.
        base = os.path.dirname(os.path.abspath(where))
        spec = os.path.normpath(os.path.join(base, os.path.expanduser(directory)))
        build: Callable[[str], TokenStore] = FileStore
    elif isinstance(spec, str) and spec.startswith(("redis://", "rediss://")):
        build = RedisStore
    else:
        # The spec is not echoed: a Redis URL may carry a password.
        raise fail("store must be 'memory', 'file' or a Redis URL such as 'redis://…'")
    if (build, spec) not in stores:
        try:
            stores[build, spec] = build(spec)
        except ConfigurationError as exc:
            raise fail(str(exc)) from exc
    return stores[build, spec]


def _domain(host: str) -> str:
    """The last two labels of a host name (an address stays whole): a rough "site"."""
    host = host.lower().strip("[]").rstrip(".")
    if host.replace(".", "").isdigit() or ":" in host:
        return host
    return ".".join(host.split(".")[-2:])


def prefix_hints(entry: Entry) -> list[str]:
    """Hints, not errors, about prefixes that look unreachable from the entry's token server.

    A prefix on a loopback alias or scheme other than the token URL's (`localhost` against
    `127.0.0.1`), a prefix on loopback with a token server elsewhere or the other way round,
    or one under another domain: each may be right (an identity provider of its own), so
    `renewauth check` only says so.
    """
    token_url = entry.auth.token_url
    token = urlsplit(token_url)
    token_host = (token.hostname or "").lower()
    token_loopback = is_loopback_host(token_host)
    hints = []
    for prefix in entry.prefixes:
        parts = urlsplit(prefix)
        host = (parts.hostname or "").lower()
        shown = origin_of(prefix) + parts.path  # never a user:password the URL may hold
        where = f"prefix {shown} and token_url {origin_of(token_url)}"
        if is_loopback_host(host) != token_loopback:
            side = "only the prefix" if is_loopback_host(host) else "only token_url"
            hints.append(f"{where}: {side} is on this machine; is one of them left from a test?")
        elif token_loopback and host != token_host:
            hints.append(
                f"{where}: two names for this machine; a program that calls {token_host} "
                "matches no prefix (write the host as the program does)"
            )
        elif token_loopback and parts.scheme != token.scheme and parts.port == token.port:
            hints.append(f"{where}: the same port with another scheme; check http against https")
        elif not token_loopback and _domain(host) != _domain(token_host):
            hints.append(
                f"{where}: another domain than the token server's; fine for a separate "
                "identity provider, otherwise check the prefix"
            )
    return hints
