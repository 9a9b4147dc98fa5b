"""The TOML configuration: one auth object per entry, secrets kept out of messages and files.

Configurations are written to `tmp_path` with an explicit mode; nothing here sends a request.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from renewauth import (
    ConfigurationError,
    FileStore,
    OAuth2ClientCredentials,
    OAuth2Password,
    OAuth2RefreshToken,
    RedisStore,
    TokenAuth,
)
from renewauth.config import Entry, load_config, prefix_hints
from renewauth.providers import Keycloak, OrderCloud, Shopware, VanMarcke, Vendorlink
from renewauth.stores import default_store

SECRET = "s3cret-canary-7f1e"
IDP = "https://idp.example.com/oauth/token"
_ENV_LINE = 'client_secret_env = "PRICING_SECRET"'


def write(tmp_path: Path, text: str, mode: int = 0o600, name: str = "renewauth.toml") -> Path:
    path = tmp_path / name
    path.write_text(f'store_path = "{tmp_path / "tokens"}"\n{text}', encoding="utf-8")
    path.chmod(mode)
    return path


def store_of(auth: TokenAuth) -> object:
    return auth._manager.store


def client_secret_of(auth: TokenAuth) -> object:
    return auth._manager.grant.client.client_secret  # type: ignore[attr-defined]  # OAuth2 grants


PRICING = f"""
[auth.pricing]
provider = "oauth2-client-credentials"
prefixes = ["https://api.example.com/v1/"]
token_url = "{IDP}"
client_id = "reporting"
client_secret = "{SECRET}"
"""

PROVIDERS = [
    (
        "oauth2-client-credentials",
        f'token_url = "{IDP}"\nclient_id = "c"\nclient_secret = "{SECRET}"\nscope = ["a", "b"]',
        OAuth2ClientCredentials,
    ),
    (
        "oauth2-password",
        f'token_url = "{IDP}"\nclient_id = "c"\nusername = "u"\npassword = "{SECRET}"',
        OAuth2Password,
    ),
    (
        "oauth2-refresh-token",
        f'token_url = "{IDP}"\nclient_id = "c"\nrefresh_token = "{SECRET}"',
        OAuth2RefreshToken,
    ),
    (
        "keycloak",
        'server_url = "https://idp.example.com"\nrealm = "wallis"\nclient_id = "c"\n'
        f'client_secret = "{SECRET}"\nrefresh_token = "{SECRET}"',
        Keycloak,
    ),
    (
        "keycloak",
        'token_url = "https://idp.example.com/realms/wallis/protocol/openid-connect/token"\n'
        f'client_id = "c"\nusername = "u"\npassword = "{SECRET}"',
        Keycloak,
    ),
    ("ordercloud", f'client_id = "c"\nclient_secret = "{SECRET}"', OrderCloud),
    (
        "shopware",
        f'base_url = "https://shop.example.com"\nclient_id = "c"\nclient_secret = "{SECRET}"',
        Shopware,
    ),
    (
        "vendorlink",
        f'username = "u"\npassword = "{SECRET}"\nbase_url = "https://app.vendorlink.nl"',
        Vendorlink,
    ),
    (
        "vanmarcke",
        f'username = "u"\npassword = "{SECRET}"\nclient_id = "c"\napi_key = "{SECRET}"',
        VanMarcke,
    ),
]


@pytest.mark.parametrize(("provider", "keys", "expected"), PROVIDERS)
def test_config_builds_each_provider_with_a_file_store(
    tmp_path: Path, provider: str, keys: str, expected: type[TokenAuth]
) -> None:
    """Every provider name builds its class, served prefixes and the default FileStore."""
    path = write(tmp_path, f'[auth.api]\nprovider = "{provider}"\n{keys}\nleeway = 5\n')

    entries = load_config(path)

    entry = entries["api"]
    assert type(entry.auth) is expected
    assert entry.prefixes == ()
    store = store_of(entry.auth)
    assert isinstance(store, FileStore)
    assert store.path == tmp_path / "tokens"


def test_config_keeps_prefixes_and_the_common_options(tmp_path: Path) -> None:
    """Prefixes come back as a tuple; options reach the constructor."""
    path = write(tmp_path, PRICING + "timeout = 3.5\nretries = 0\nretry_statuses = [401, 403]\n")

    entry = load_config(path)["pricing"]

    assert entry == Entry("pricing", entry.auth, ("https://api.example.com/v1/",))
    assert entry.auth._retry_statuses == frozenset({401, 403})


@pytest.mark.parametrize("mode", ["keep", "replace", "keep-until-401"])
def test_config_reads_existing_bearer_per_entry(tmp_path: Path, mode: str) -> None:
    path = write(tmp_path, PRICING + f"existing_bearer = '{mode}'\n")

    assert load_config(path)["pricing"].existing_bearer == mode


def test_config_existing_bearer_defaults_to_keep_until_401(tmp_path: Path) -> None:
    """The default never changes the principal an API sees while it accepts the program's
    own token, and still replaces a stale one after the API rejects it."""
    assert load_config(write(tmp_path, PRICING))["pricing"].existing_bearer == "keep-until-401"


def _entry(token_url: str, *prefixes: str) -> Entry:
    return Entry("e", OAuth2ClientCredentials(token_url, "c", "s"), prefixes)


@pytest.mark.parametrize(
    ("token_url", "prefix", "hint"),
    [
        ("http://127.0.0.1:8080/token", "http://localhost:8080/api/", "two names for this"),
        ("http://127.0.0.1:8080/token", "https://127.0.0.1:8080/api/", "another scheme"),
        ("http://127.0.0.1:8080/token", "https://api.example.com/", "only token_url is on"),
        ("https://idp.example.com/token", "http://localhost:9000/", "only the prefix is on"),
        ("https://idp.example.com/token", "https://api.example.org/", "another domain"),
        ("https://idp.example.com/token", "https://api.example.com/v1/", None),
        ("http://127.0.0.1:8080/token", "http://127.0.0.1:8080/api/", None),
        ("http://127.0.0.1:8080/token", "http://127.0.0.1:9090/api/", None),
    ],
)
def test_prefix_hints_flag_prefixes_unlikely_to_match_the_token_servers_family(
    token_url: str, prefix: str, hint: str | None
) -> None:
    hints = prefix_hints(_entry(token_url, prefix))

    if hint is None:
        assert hints == []
    else:
        [only] = hints
        assert only.startswith(f"prefix {prefix} and token_url ")
        assert hint in only


def test_config_uses_the_process_store_when_the_default_is_memory(tmp_path: Path) -> None:
    """default_store="memory" leaves tokens in the process-wide MemoryStore."""
    path = write(tmp_path, PRICING)

    entry = load_config(path, default_store="memory")["pricing"]

    assert store_of(entry.auth) is default_store()


def test_config_entry_store_overrides_the_default(tmp_path: Path) -> None:
    """An entry's own store = "memory" wins over the caller's default_store."""
    path = write(tmp_path, PRICING + 'store = "memory"\n')

    entry = load_config(path, default_store="file")["pricing"]

    assert store_of(entry.auth) is default_store()


def test_config_builds_a_redis_store_from_a_url(tmp_path: Path) -> None:
    """A redis:// store spec gives a RedisStore (no connection is made yet)."""
    path = write(tmp_path, PRICING + 'store = "redis://localhost:6379/0"\n')

    entry = load_config(path)["pricing"]

    assert isinstance(store_of(entry.auth), RedisStore)


def test_config_entries_share_one_store_object_per_spec(tmp_path: Path) -> None:
    """Entries with the same store spec share one object; another spec gets another."""
    text = "".join(
        PRICING.replace("pricing", name).replace('"reporting"', f'"{name}"') + extra
        for name, extra in [
            ("a", ""),
            ("b", ""),
            ("c", 'store_path = "other"\n'),
            ("d", 'store = "redis://localhost:6379/0"\n'),
            ("e", 'store = "redis://localhost:6379/0"\n'),
        ]
    )
    path = write(tmp_path, text)

    stores = {name: store_of(entry.auth) for name, entry in load_config(path).items()}

    assert stores["a"] is stores["b"]
    assert stores["c"] is not stores["a"]
    assert stores["d"] is stores["e"]
    assert isinstance(stores["c"], FileStore)
    assert stores["c"].path == tmp_path / "other"  # relative to the configuration file


def test_config_file_store_defaults_to_the_durable_default_of_the_python_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without store_path, the FileStore is the one the Python API gives a refresh-token
    chain without store=: renewauth's state directory, so a script and `renewauth run`
    with the same credential share one chain."""
    monkeypatch.setenv("RENEWAUTH_STATE_DIR", str(tmp_path / "state"))
    path = tmp_path / "renewauth.toml"
    path.write_text(PRICING)
    path.chmod(0o600)

    entry = load_config(path)["pricing"]

    store = store_of(entry.auth)
    assert isinstance(store, FileStore)
    assert store.path == tmp_path / "state" / "tokens"
    chain = OAuth2RefreshToken("https://idp.example.com/token", "app", "a-refresh-token")
    assert store_of(chain).path == store.path  # type: ignore[attr-defined]


def test_config_reads_a_secret_from_the_named_environment_variable(tmp_path: Path) -> None:
    """client_secret_env names a variable in environ, whose value becomes the secret."""
    path = write(tmp_path, PRICING.replace("client_secret =", "client_secret_env ="), 0o644)

    entry = load_config(path, environ={SECRET: "from-env"})["pricing"]

    assert client_secret_of(entry.auth) == "from-env"


def test_config_reads_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without environ=, *_env keys are looked up in os.environ."""
    monkeypatch.setenv("PRICING_SECRET", "from-os-environ")
    path = write(tmp_path, PRICING.replace(f'client_secret = "{SECRET}"', _ENV_LINE))

    entry = load_config(path)["pricing"]

    assert client_secret_of(entry.auth) == "from-os-environ"


def test_config_refuses_an_unset_environment_variable(tmp_path: Path) -> None:
    """A missing variable is named, with its entry, file and the export to run."""
    path = write(tmp_path, PRICING.replace(f'client_secret = "{SECRET}"', _ENV_LINE))

    with pytest.raises(ConfigurationError, match="export PRICING_SECRET") as caught:
        load_config(path, environ={"PRICING_SECRET": ""})

    assert str(path) in str(caught.value)
    assert "[auth.pricing]" in str(caught.value)


def test_config_refuses_a_secret_given_twice(tmp_path: Path) -> None:
    """A secret and its _env form together are ambiguous."""
    path = write(tmp_path, PRICING + _ENV_LINE + "\n")

    with pytest.raises(ConfigurationError, match="keep one of them"):
        load_config(path, environ={"PRICING_SECRET": "x"})


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_config_refuses_a_literal_secret_in_a_file_others_can_open(
    tmp_path: Path, mode: int
) -> None:
    """A file that holds a secret and is open to group or others names the chmod to run."""
    path = write(tmp_path, PRICING, mode)

    with pytest.raises(ConfigurationError, match=f"chmod 600 {path}") as caught:
        load_config(path)

    assert "[auth.pricing]" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_config_refuses_a_redis_password_in_a_file_others_can_open(tmp_path: Path) -> None:
    """A Redis URL with a password is a secret too."""
    path = write(tmp_path, PRICING + 'store = "redis://:hunter2@localhost/0"\n', 0o644)
    path.write_text(path.read_text().replace(f'client_secret = "{SECRET}"', _ENV_LINE))

    with pytest.raises(ConfigurationError, match="chmod 600") as caught:
        load_config(path, environ={"PRICING_SECRET": "x"})

    assert "hunter2" not in str(caught.value)


def test_config_accepts_a_literal_secret_in_a_private_file(tmp_path: Path) -> None:
    """Mode 0600 is what the chmod message asks for, and loads."""
    path = write(tmp_path, PRICING, 0o600)

    entry = load_config(path)["pricing"]

    assert client_secret_of(entry.auth) == SECRET


INVALID = [
    (PRICING + "client_secert = 'x'\n", r"did you mean 'client_secret'\?"),
    (
        PRICING.replace("oauth2-client-credentials", "oauth2"),
        "'oauth2'; set provider to one of oauth2-client-credentials, oauth2-password",
    ),
    (PRICING.replace('provider = "oauth2-client-credentials"', ""), "set provider to one of"),
    (PRICING.replace('client_id = "reporting"', ""), "add client_id = … to the entry"),
    (PRICING.replace(f'client_secret = "{SECRET}"', ""), "or client_secret_env = 'VARIABLE'"),
    (PRICING.replace('"https://api.example.com/v1/"', '"/v1/"'), "write it in full"),
    (PRICING.replace('["https://api.example.com/v1/"]', '"https://a/"'), "an array of URL"),
    (PRICING + "store = 5\n", "store must be 'memory', 'file' or a Redis URL"),
    (PRICING + 'store = "s3://bucket"\n', "store must be 'memory', 'file' or a Redis URL"),
    (PRICING + "store_path = 5\n", "store_path must be a directory path"),
    (PRICING + "leeway = 'soon'\n", "leeway must be a number of seconds, got a string"),
    (PRICING + "leeway = nan\n", "leeway= must be a finite number"),
    (PRICING + "retry_statuses = [200]\n", "list HTTP error statuses"),
    (
        PRICING.replace(f'client_secret = "{SECRET}"', "client_secret_env = 5"),
        "must name an environment variable",
    ),
    (PRICING.replace("https://idp", "http://idp"), "allow_insecure_http"),
    (PRICING.replace("[auth.pricing]", "[auth.pricing]\nauth_url = 'x'"), "valid keys: provider"),
    (PRICING + "scope = [1]\n", "scope must be a string or an array of strings"),
    (PRICING + "existing_bearer = 'drop'\n", "existing_bearer must be 'keep-until-401' .*'keep'"),
    (PRICING + "existing_bearer = true\n", "existing_bearer must be 'keep-until-401'"),
    (PRICING.replace("[auth.pricing]", "surprise = 1\n[auth.pricing]"), "unknown top-level key"),
    (PRICING + "[auth.other]\nprovider = 'keycloak'\nclient_id = 'c'\n", "or token_url = …"),
    (
        "[auth.kc]\nprovider = 'keycloak'\nclient_id = 'c'\nrealm = 'r'\n"
        "token_url = 'https://idp.example.com/realms/r/protocol/openid-connect/token'\n",
        "either token_url or server_url and realm",
    ),
]


@pytest.mark.parametrize(("text", "fix"), INVALID)
def test_config_error_names_the_file_the_entry_and_the_fix(
    tmp_path: Path, text: str, fix: str
) -> None:
    """Each invalid entry raises a ConfigurationError with file, entry and fix, no secret."""
    path = write(tmp_path, text)

    with pytest.raises(ConfigurationError, match=fix) as caught:
        load_config(path)

    message = str(caught.value)
    assert message.startswith(str(path))
    assert "[auth." in message or "top-level" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("text", "fix"),
    [
        ("[auth.a\n", r"invalid TOML: .*line 2.*; fix the syntax"),
        ("", r"no \[auth.NAME\] entries; an entry looks like"),
        ("auth = 5\n", r"no \[auth.NAME\] entries"),
        ("[auth]\na = 1\n", r"\[auth\] holds 'a' itself; .* under \[auth.NAME\]"),
        (
            '[auth]\nprovider = "keycloak"\n',
            r"\[auth\] holds 'provider' itself; give the entry a name .*\[auth.orders\]",
        ),
    ],
)
def test_config_error_for_a_file_without_usable_entries(
    tmp_path: Path, text: str, fix: str
) -> None:
    """Broken TOML and missing entries are explained with the file name."""
    path = write(tmp_path, text)

    with pytest.raises(ConfigurationError, match=fix) as caught:
        load_config(path)

    assert str(path) in str(caught.value)


def test_config_error_for_a_missing_file(tmp_path: Path) -> None:
    """A missing file says how to point at one."""
    with pytest.raises(ConfigurationError, match="no such configuration file; create it"):
        load_config(tmp_path / "absent.toml")


def test_config_error_for_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are a ConfigurationError, not a UnicodeDecodeError."""
    path = tmp_path / "renewauth.toml"
    path.write_bytes(b"[auth.a]\nprovider = '\xff'\n")

    with pytest.raises(ConfigurationError, match="save it as UTF-8"):
        load_config(path)


def test_config_never_shows_an_environment_secret(tmp_path: Path) -> None:
    """A secret read from the environment stays out of a constructor's error and the repr."""
    text = PRICING.replace(f'client_secret = "{SECRET}"', _ENV_LINE)
    good = load_config(write(tmp_path, text), environ={"PRICING_SECRET": SECRET})
    path = write(tmp_path, text + "client_auth = 'digest'\n", name="bad.toml")

    with pytest.raises(
        ConfigurationError, match="client_auth= must be one of 'body', 'basic'"
    ) as caught:
        load_config(path, environ={"PRICING_SECRET": SECRET})

    assert SECRET not in str(caught.value)
    assert SECRET not in repr(good)


# --- fuzz: whatever the file holds, the loader answers with a ConfigurationError -----------

_TEXT = st.text(st.characters(codec="utf-8"), max_size=20)
_SCALARS = _TEXT | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=True)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
_OPTIONS = ["leeway", "timeout", "retries", "retry_statuses", "allow_insecure_http"]
_OTHERS = ["prefixes", "store", "scope", "token_url", "realm", "bogus"]
_SECRETS = ["password", "client_secret", "refresh_token", "api_key"]


def toml_value(value: object) -> str:
    """A TOML literal for a value tomllib could have produced."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{toml_value(key)} = {toml_value(item)}" for key, item in value.items())
        return "{" + ", ".join(pairs) + "}"
    return str(value)


@given(
    case=st.sampled_from(PROVIDERS),
    data=st.data(),
    mode=st.sampled_from([0o600, 0o600, 0o600, 0o644]),
)
def test_config_fuzz_values_give_a_configuration_error_or_entries(
    case: tuple[str, str, type[TokenAuth]], data: st.DataObject, mode: int
) -> None:
    """Arbitrary values for known keys never raise anything but ConfigurationError."""
    provider, keys, _ = case
    good = dict(line.split(" = ", 1) for line in keys.splitlines())
    good["provider"] = toml_value(provider)
    secrets = [f"{key}_env" for key in good if key in _SECRETS]
    known = sorted({*good, *_OPTIONS, *_OTHERS, *secrets})
    values = _VALUES | st.sampled_from(
        ["file", "memory", "redis://localhost/0", "SECRET_VAR", "tokens"]
    )
    wild = data.draw(st.dictionaries(st.sampled_from(known), values, max_size=4))
    dropped = data.draw(st.sets(st.sampled_from(sorted(good.keys() - {"provider"})), max_size=1))
    lines = [f"{key} = {value}" for key, value in good.items() if key not in {*wild, *dropped}]
    lines += [f"{key} = {toml_value(value)}" for key, value in wild.items()]
    with tempfile.TemporaryDirectory() as directory:
        path = write(Path(directory), "[auth.fuzz]\n" + "\n".join(lines) + "\n", mode)
        environ = {"XDG_CACHE_HOME": directory, "SECRET_VAR": SECRET}
        try:
            entries = load_config(path, environ=environ)
        except ConfigurationError as error:
            assert SECRET not in str(error)
        else:
            assert set(entries) == {"fuzz"}


_FRAGMENTS = st.sampled_from(
    [
        "[auth.a]",
        "[auth]",
        "[[auth.b]]",
        'provider = "keycloak"',
        'provider = "oauth2-password"',
        "prefixes = [",
        '"https://api.example.com/"]',
        'client_id = "c"',
        "store = 'memory'",
        "= =",
        "auth = 1",
        "\x00",
    ]
)


@given(st.lists(_FRAGMENTS | _TEXT, max_size=8), st.binary(max_size=8))
def test_config_fuzz_text_gives_a_configuration_error_or_entries(
    fragments: list[str], tail: bytes
) -> None:
    """Arbitrary TOML-ish text (and trailing bytes) never raises anything else."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "renewauth.toml")
        path.write_bytes("\n".join(fragments).encode() + tail)
        os.chmod(path, 0o600)
        with contextlib.suppress(ConfigurationError):
            load_config(path, default_store="memory", environ={})


def _private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


KEYCLOAK_SIGNED_JWT = """
[auth.portal]
provider = "keycloak"
token_url = "https://idp.example.com/realms/wallis/protocol/openid-connect/token"
client_id = "reporting"
client_auth = "private_key_jwt"
"""


def test_config_reads_a_keycloak_private_key_from_the_environment(tmp_path: Path) -> None:
    """A Keycloak "Signed JWT" client: its key comes from private_key_env, never the file."""
    key = _private_key_pem()
    path = write(tmp_path, KEYCLOAK_SIGNED_JWT + 'private_key_env = "PORTAL_KEY"\n', 0o644)

    auth = load_config(path, environ={"PORTAL_KEY": key})["portal"].auth

    client = auth._manager.grant.client  # type: ignore[attr-defined]  # an OAuth2 grant
    assert client.auth == "private_key_jwt"
    assert client.assertion is not None
    assert client.client_secret is None
    assert "PRIVATE" not in repr(auth)


def test_config_refuses_a_private_key_in_a_file_others_can_open(tmp_path: Path) -> None:
    key = _private_key_pem().replace("\n", "\\n")
    path = write(tmp_path, KEYCLOAK_SIGNED_JWT + f'private_key = "{key}"\n', 0o644)

    with pytest.raises(ConfigurationError, match="chmod 600") as caught:
        load_config(path)

    assert "private_key_env" in str(caught.value)
    assert "PRIVATE" not in str(caught.value)
