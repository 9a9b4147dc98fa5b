"""The `renewauth` command and the runnable examples."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from renewauth.cli import _bootstrap_skipped_by, main
from renewauth.testing import FakeOAuth2Provider

_EXAMPLES_DIR = pathlib.Path(__file__).parent.parent / "examples"
EXAMPLES = [*sorted(_EXAMPLES_DIR.glob("*.py")), _EXAMPLES_DIR / "retrofit" / "run_against_fake.py"]


def test_demo_shows_renewals_and_a_revocation_with_no_failed_request(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--lifetime", "1.5"]) == 0
    output = capsys.readouterr().out
    assert "token #1 fetched with the password grant" in output
    assert "renewed with the refresh_token grant" in output
    assert "the server revokes every access token" in output
    assert "401, renewed, resent once -> 200" in output
    summary = output.strip().splitlines()[-1]
    assert " 0 failed" in summary
    assert "0 stale refresh tokens" in summary


def test_demo_refuses_a_lifetime_too_short_to_show_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--lifetime", "0"])
    assert exit_info.value.code == 2
    assert "--lifetime" in capsys.readouterr().err


def test_command_without_arguments_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs_against_the_fake(example: pathlib.Path) -> None:
    result = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "200" in result.stdout


def test_vanmarcke_create_service_user_writes_a_private_file_and_explains_reset(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from renewauth.testing import FakeVanMarcke

    monkeypatch.setenv("VANMARCKE_API_KEY", "test-api-key")
    monkeypatch.setenv("END_USER_PASSWORD", "enduser-password")
    monkeypatch.setenv("VM_SECRET", "vm-secret")
    output = tmp_path / "service-user.json"
    with FakeVanMarcke() as fake:
        common = [
            "--client-id",
            "vm-client",
            "--username",
            "enduser",
            "--password-env",
            "END_USER_PASSWORD",
            "--client-secret-env",
            "VM_SECRET",
            "--token-url",
            fake.token_url,
            "--service-users-url",
            fake.service_users_url,
        ]
        assert main(["vanmarcke", "create-service-user", *common, "--output", str(output)]) == 0
        assert output.stat().st_mode & 0o777 == 0o600
        created = json.loads(output.read_text())
        assert "enduser-password" not in capsys.readouterr().out

        assert main(["vanmarcke", "create-service-user", *common]) == 1
        assert "reset-password" in capsys.readouterr().err

        arguments = ["vanmarcke", "reset-password", *common, "--service-user", created["username"]]
        assert main(arguments) == 0
        shown = capsys.readouterr().out
        assert created["username"] in shown
        assert created["password"] not in shown  # a new password, not the old one


def test_cli_error_is_one_line_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("VANMARCKE_API_KEY", raising=False)
    arguments = ["vanmarcke", "create-service-user", "--client-id", "c", "--username", "u"]
    assert main(arguments) == 1
    error = capsys.readouterr().err
    assert error.startswith("renewauth: error: environment variable VANMARCKE_API_KEY")
    assert "Traceback" not in error


LEGACY = """
import asyncio, sys, time
import httpx, requests

url = sys.argv[1]
session, client = requests.Session(), httpx.Client()

async def async_call():
    async with httpx.AsyncClient() as async_client:
        return (await async_client.get(url)).status_code

statuses = []
deadline = time.monotonic() + 4.0  # four lifetimes of the 1 s tokens, however slow the machine
while time.monotonic() < deadline or len(statuses) < 25:
    statuses += [
        requests.get(url, timeout=10).status_code,
        session.get(url, timeout=10).status_code,
        httpx.get(url).status_code,
        client.get(url).status_code,
        asyncio.run(async_call()),
    ]
print(len(statuses), sorted(set(statuses)))
sys.exit(0 if set(statuses) == {200} else 3)
"""


def _renewauth_run(
    config: pathlib.Path, *command: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`renewauth run --config CONFIG -- COMMAND…` in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "renewauth.cli", "run", "--config", str(config), "--", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def _config(
    tmp_path: pathlib.Path, fake: FakeOAuth2Provider, *, literal_secret: bool = False
) -> pathlib.Path:
    secret = 'client_secret = "client-secret"' if literal_secret else 'client_secret_env = "S"'
    config = tmp_path / "renewauth.toml"
    config.write_text(
        f"""
[auth.orders]
provider = "oauth2-password"
prefixes = ["{fake.api_url}"]
token_url = "{fake.token_url}"
client_id = "client-id"
username = "alice"
password_env = "P"
{secret}
leeway = 0.2
store_path = "{tmp_path}/tokens"
"""
    )
    config.chmod(0o600)
    return config


def test_run_gives_a_legacy_script_renewing_tokens_in_every_call(
    tmp_path: pathlib.Path,
) -> None:
    script = tmp_path / "legacy.py"
    script.write_text(LEGACY)
    with FakeOAuth2Provider(token_lifetime=1.0, rotate_refresh_tokens=True) as fake:
        config = _config(tmp_path, fake)
        result = _renewauth_run(
            config,
            sys.executable,
            str(script),
            fake.api_url + "orders",
            env={**os.environ, "P": "alice-password", "S": "client-secret"},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "[200]" in result.stdout
        assert fake.stale_refresh_tokens == 0


def test_run_passes_the_exit_status_through_and_keeps_the_users_sitecustomize(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(
        "import os\nos.environ['USER_SITE_RAN'] = '1'\n"
    )
    with FakeOAuth2Provider() as fake:
        config = _config(tmp_path, fake)
        code = "import os, sys; sys.exit(7 if os.environ.get('USER_SITE_RAN') == '1' else 1)"
        environment = {
            **os.environ,
            "P": "alice-password",
            "S": "client-secret",
            "PYTHONPATH": str(tmp_path / "site"),
        }
        result = _renewauth_run(config, sys.executable, "-c", code, env=environment)
        assert result.returncode == 7, result.stderr


def test_token_prints_a_token_the_api_accepts(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import requests

    monkeypatch.setenv("P", "alice-password")
    monkeypatch.setenv("S", "client-secret")
    with FakeOAuth2Provider() as fake:
        assert main(["token", "--config", str(_config(tmp_path, fake)), "orders"]) == 0
        token = capsys.readouterr().out.strip()
        reply = requests.get(fake.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert reply.status_code == 200


def test_check_reports_each_entry_with_no_secret(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("S", "client-secret")
    with FakeOAuth2Provider() as fake:
        monkeypatch.setenv("P", "alice-password")
        config = _config(tmp_path, fake)
        config.write_text(
            config.read_text()
            + f"""
[auth.broken]
provider = "oauth2-client-credentials"
token_url = "{fake.token_url}"
client_id = "client-id"
client_secret_env = "WRONG"
store = "memory"
"""
        )
        monkeypatch.setenv("WRONG", "not-the-secret")
        assert main(["check", "--config", str(config)]) == 2
        output = capsys.readouterr().out
    assert "ok     orders" in output
    assert "error  broken: InvalidClient" in output
    for secret in ("alice-password", "client-secret", "not-the-secret"):
        assert secret not in output


def test_cli_refuses_a_config_with_a_secret_others_can_read(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeOAuth2Provider() as fake:
        config = _config(tmp_path, fake, literal_secret=True)
        config.chmod(0o644)
        assert main(["check", "--config", str(config)]) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_run_imports_nothing_into_a_program_that_uses_no_http(tmp_path: pathlib.Path) -> None:
    with FakeOAuth2Provider() as fake:
        config = _config(tmp_path, fake)
        code = (
            "import sys; loaded = {'renewauth', 'requests', 'httpx', 'wrapt'} & sys.modules.keys();"
            " print(sorted(loaded)); sys.exit(1 if loaded else 0)"
        )
        result = _renewauth_run(
            config,
            sys.executable,
            "-c",
            code,
            env={**os.environ, "P": "alice-password", "S": "client-secret"},
        )
        assert result.returncode == 0, result.stdout + result.stderr


# --- `renewauth run` on the SDKs people run: each row of issue 12's table, as a stand-in ------

SDK_SCRIPT = """
import asyncio, json, sys, time

mode, url, token_url = sys.argv[1:4]


own = {"token": None, "renew_at": 0.0, "calls": 0}


def own_token():
    # An SDK that manages its own token (its own token calls, outside every prefix).
    import requests

    if time.monotonic() >= own["renew_at"]:
        reply = requests.post(token_url, data={"grant_type": "password", "username": "bob",
            "password": "bob-password", "client_id": "client-id",
            "client_secret": "client-secret"}).json()
        own.update(token=reply["access_token"], calls=own["calls"] + 1,
                   renew_at=time.monotonic() + reply["expires_in"] / 2)
    return own["token"]


outside = url.split("/api/")[0] + "/echo-headers"  # under no prefix
headers = {"Authorization": "Bearer pasted-in-last-month"} if mode.endswith("-stale") else {}

if mode == "httpx2":
    import httpx2

    async def async_call():
        async with httpx2.AsyncClient() as client:
            return (await client.get(url)).json()

    calls = [lambda: httpx2.get(url).json(), lambda: asyncio.run(async_call())]
    left_alone = httpx2.get(outside).json()
elif mode.startswith("aiohttp"):
    import aiohttp

    async def session_calls(target, count, headers):
        # A session made before any request, with the program's own default headers.
        async with aiohttp.ClientSession(headers=headers) as session:
            answers = []
            for _ in range(count):
                async with session.get(target) as reply:
                    answers.append(await reply.json())
            return answers

    calls = [lambda: asyncio.run(session_calls(url, 10, headers))]
    left_alone = asyncio.run(session_calls(outside, 1, {}))[0]
else:
    import requests

    if mode == "keycloak":
        session = requests.Session()
        session.auth = lambda request: request
    elif mode == "github":
        class NoOpAuth(requests.auth.AuthBase):
            def __call__(self, request):
                return request

        session = requests.Session()
        session.auth = NoOpAuth()
    elif mode == "jira":
        class ResilientSession(requests.Session):
            def request(self, method, url, **kwargs):
                return super().request(method, url, **kwargs)

        session = ResilientSession()
    else:
        session = requests.Session()
        session.headers["Authorization"] = "Bearer pasted-in-last-month"
    if mode == "ordercloud":
        calls = [lambda: [session.get(url, timeout=10,
                                      headers={"Authorization": "Bearer " + own_token()}).json()]]
    else:
        calls = [lambda: [session.get(url, timeout=10).json()]]
    left_alone = requests.get(outside, timeout=10).json()

answers = []
started = time.monotonic()
while time.monotonic() - started < 2.5:
    for call in calls:
        got = call()
        answers += got if isinstance(got, list) else [got]
print(json.dumps({
    "left_alone": "authorization" not in left_alone,
    "subjects": sorted({str(answer.get("subject")) for answer in answers}),
    "errors": sorted({str(answer.get("error")) for answer in answers if "error" in answer}),
    "calls": len(answers),
    "own_token_calls": own["calls"],
    "seconds": time.monotonic() - started,
}))
"""

# mode → (the principal the API sees, how the explain line goes on after "signed by [auth.orders]"
# or None when it is not signed)
SDK_ROWS = {
    "keycloak": ("alice", ": its own auth (<lambda>) added no Authorization header"),
    "github": ("alice", ": its own auth (NoOpAuth) added no Authorization header"),
    "jira": ("alice", ""),
    "httpx2": ("alice", ""),
    "aiohttp": ("alice", ""),
    "aiohttp-stale": ("alice", ", replacing a Bearer token the API rejected"),
    "ordercloud": ("bob", None),
    "stale-pasted-token": ("alice", ", replacing a Bearer token the API rejected"),
}
STALE = ("stale-pasted-token", "aiohttp-stale")  # a Bearer token pasted into the program


def _two_user_fake() -> FakeOAuth2Provider:
    return FakeOAuth2Provider(
        token_lifetime=1.0, users={"alice": "alice-password", "bob": "bob-password"}
    )


@pytest.mark.parametrize("mode", SDK_ROWS)
def test_run_gives_each_sdk_pattern_live_tokens_and_says_what_it_did(
    mode: str, tmp_path: pathlib.Path
) -> None:
    principal, reason = SDK_ROWS[mode]
    script = tmp_path / "sdk.py"
    script.write_text(SDK_SCRIPT)
    environment = {**os.environ, "P": "alice-password", "S": "client-secret"}
    with _two_user_fake() as fake:
        config = _config(tmp_path, fake)
        command = [sys.executable, str(script), mode, fake.api_url + "orders", fake.token_url]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "renewauth.cli",
                "run",
                "--explain",
                "--config",
                str(config),
                "--",
                *command,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=environment,
        )
        assert result.returncode == 0, result.stderr
        outcome = json.loads(result.stdout)
        assert outcome["subjects"] == [principal], result.stderr
        assert outcome["errors"] == []
        assert outcome["left_alone"]  # a call under no prefix carries no token
        # One renewal per (lifetime - leeway) = 0.8 s of calls, the first token, at most one
        # more in flight at the end; an SDK that keeps its own token makes its own call.
        renewauth_calls = fake.token_calls - outcome["own_token_calls"]
        if principal == "alice":
            assert 2 <= renewauth_calls <= outcome["seconds"] / 0.8 + 2
        else:
            assert renewauth_calls == 0
        assert fake.api_unauthorized == (1 if mode in STALE else 0)
    marker = " INFO renewauth.retrofit: "
    explained = [line.split(marker)[1] for line in result.stderr.splitlines() if marker in line]
    assert len(explained) == len(set(explained))  # once per origin and reason
    expected = f"{fake.base_url}: " + (
        f"signed by [auth.orders]{reason}"
        if reason is not None
        else "its own Bearer token kept until the API rejects it"
    )
    assert any(line.startswith(expected) for line in explained), result.stderr
    warnings = [line for line in result.stderr.splitlines() if " WARNING " in line]
    if mode == "ordercloud" or mode in STALE:
        assert f"requests to {fake.base_url} carry their own Bearer token" in warnings[0]
        assert "existing_bearer = 'keep' in [auth.orders]" in warnings[0]
        assert "existing_bearer = 'replace' in [auth.orders]" in warnings[0]
        assert len(warnings) == (2 if mode in STALE else 1), warnings
    else:
        assert warnings == []


# --- `renewauth run` when an httpx fork fails to import: gql's `import httpx2 as httpx` ---------

FALLBACK_SCRIPT = """
import sys

try:
    import httpx2 as httpx
except ImportError:
    import httpx

reply = httpx.get(sys.argv[1])
waiting = [finder for finder in sys.meta_path if type(finder).__name__ == "_PatchOnImport"]
print(httpx.__name__, reply.status_code, reply.json().get("subject"), len(waiting))
"""

# How `import httpx2` fails in the child: a file that makes it so, placed first on its path.
HTTPX2_FAILURES = {
    # No spec found. httpx2 may be installed here: a path finder that never finds it stands in
    # for the interpreter's own, so the bootstrap's lookup comes back empty as if it were not.
    "not-installed": (
        "sitecustomize.py",
        """
import importlib.machinery, sys


class _WithoutHttpx2(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name == "httpx2" else super().find_spec(name, path, target)


sys.meta_path[sys.meta_path.index(importlib.machinery.PathFinder)] = _WithoutHttpx2
""",
    ),
    # Found, but its code fails: a partial install missing one of its dependencies.
    "broken": ("httpx2.py", "raise ImportError('cannot import name Limits from httpcore2')\n"),
    # Found, imports httpx itself, then fails: httpx is loaded before the fork is given up.
    "broken-after-importing-httpx": (
        "httpx2.py",
        "import httpx\nraise ImportError('cannot import name Limits from httpcore2')\n",
    ),
}


@pytest.mark.parametrize("failure", HTTPX2_FAILURES)
def test_run_patches_httpx_when_the_program_falls_back_from_an_httpx2_that_fails_to_import(
    failure: str, tmp_path: pathlib.Path
) -> None:
    """A program that tries httpx2 first, as gql does, sends renewauth's token through httpx."""
    file_name, content = HTTPX2_FAILURES[failure]
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / file_name).write_text(content)
    script = tmp_path / "gql_like.py"
    script.write_text(FALLBACK_SCRIPT)
    environment = {
        **os.environ,
        "P": "alice-password",
        "S": "client-secret",
        "PYTHONPATH": str(tmp_path / "site"),
    }
    with FakeOAuth2Provider() as fake:
        config = _config(tmp_path, fake)
        result = subprocess.run(
            [
                *(sys.executable, "-m", "renewauth.cli", "-v", "run", "--config", str(config)),
                *("--", sys.executable, str(script), fake.api_url + "orders"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=environment,
        )
        token_calls = fake.token_calls
    # httpx patched, and the bootstrap's finder gone from sys.meta_path once httpx had loaded.
    assert (result.returncode, result.stdout.split()) == (0, ["httpx", "200", "alice", "0"]), (
        result.stderr
    )
    assert token_calls == 1
    # -v tells what happened: a token renewed for httpx's call, and no word of an httpx2 patched.
    assert f"token for {fake.base_url} renewed" in result.stderr
    assert "httpx2" not in result.stderr


def test_run_replaces_an_sdks_bearer_when_the_entry_says_replace(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "sdk.py"
    script.write_text(SDK_SCRIPT)
    with _two_user_fake() as fake:
        config = _config(tmp_path, fake)
        config.write_text(config.read_text() + 'existing_bearer = "replace"\n')
        result = _renewauth_run(
            config,
            sys.executable,
            str(script),
            "ordercloud",
            fake.api_url + "orders",
            fake.token_url,
            env={**os.environ, "P": "alice-password", "S": "client-secret"},
        )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["subjects"] == ["alice"]
    [warning] = [line for line in result.stderr.splitlines() if " WARNING " in line]
    assert "the API sees that principal instead of the program's" in warning
    assert "existing_bearer = 'keep' in [auth.orders]" in warning


def test_verbose_run_shows_debug_renewal_lines_from_the_child(tmp_path: pathlib.Path) -> None:
    with FakeOAuth2Provider() as fake:
        config = _config(tmp_path, fake)
        code = f"import requests; print(requests.get({fake.api_url!r}, timeout=10).status_code)"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "renewauth.cli",
                "-v",
                "run",
                "--config",
                str(config),
                "--",
                sys.executable,
                "-c",
                code,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "P": "alice-password", "S": "client-secret"},
        )
    assert (result.returncode, result.stdout.strip()) == (0, "200"), result.stderr
    # The bootstrap's format ("renewauth[PID] LEVEL logger: …"): the line comes from the child.
    assert re.search(
        rf"renewauth\[\d+\] DEBUG renewauth\.manager: token for {re.escape(fake.base_url)} "
        r"renewed; expires in \d",
        result.stderr,
    ), result.stderr
    assert "alice-password" not in result.stderr
    assert "eyJ" not in result.stderr


@pytest.mark.parametrize("option", ["-I", "-E", "-S"])
def test_run_warns_when_the_python_it_starts_skips_sitecustomize(
    option: str, tmp_path: pathlib.Path
) -> None:
    with FakeOAuth2Provider() as fake:
        result = _renewauth_run(
            _config(tmp_path, fake),
            sys.executable,
            option,
            "-c",
            "print('ran')",
            env={**os.environ, "P": "alice-password", "S": "client-secret"},
        )
    assert (result.returncode, result.stdout.strip()) == (0, "ran")
    assert f"renewauth run: WARNING: {pathlib.Path(sys.executable).name} {option} skips" in (
        result.stderr
    )


def test_run_does_not_warn_about_a_scripts_own_arguments(tmp_path: pathlib.Path) -> None:
    with FakeOAuth2Provider() as fake:
        result = _renewauth_run(
            _config(tmp_path, fake),
            sys.executable,
            "-c",
            "print('ran')",
            "-I",
            env={**os.environ, "P": "alice-password", "S": "client-secret"},
        )
    assert (result.returncode, result.stderr) == (0, "")


def test_check_hints_at_a_prefix_on_another_name_for_the_token_servers_machine(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("P", "alice-password")
    monkeypatch.setenv("S", "client-secret")
    with FakeOAuth2Provider() as fake:
        config = _config(tmp_path, fake)
        aliased = fake.api_url.replace("127.0.0.1", "localhost")
        config.write_text(config.read_text().replace(fake.api_url, aliased))
        assert main(["check", "--config", str(config)]) == 0  # a hint is not a failure
    output = capsys.readouterr().out
    assert "ok     orders" in output
    assert (
        f"hint   orders: prefix {aliased} and token_url {fake.base_url}: two names for this "
        "machine; a program that calls 127.0.0.1 matches no prefix"
    ) in output


@given(arguments=st.lists(st.text(max_size=12), max_size=6))
def test_the_python_option_check_never_fails_and_ignores_what_follows_the_script(
    arguments: list[str],
) -> None:
    found = _bootstrap_skipped_by(["python3", *arguments])
    assert found in (None, "-I", "-E", "-S")
    assert _bootstrap_skipped_by(["python3", "script.py", *arguments]) is None
    assert _bootstrap_skipped_by(["node", *arguments]) is None


def test_the_bootstrap_waits_for_every_optional_client_that_retrofit_patches() -> None:
    """The bootstrap cannot import renewauth to read the list: the two must agree."""
    import ast

    from renewauth.retrofit import PATCHED_ON_IMPORT

    source = pathlib.Path(main.__code__.co_filename).parent / "_bootstrap" / "sitecustomize.py"
    tree = ast.parse(source.read_text())
    [watched] = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(target, ast.Name) and target.id == "_WATCHED" for target in node.targets)
    ]
    assert isinstance(watched, ast.Call)
    names = {element.value for element in ast.walk(watched) if isinstance(element, ast.Constant)}
    assert names == {"requests", "httpx", *PATCHED_ON_IMPORT}
