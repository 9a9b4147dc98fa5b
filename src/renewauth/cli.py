"""The `renewauth` command. Only here is logging output configured.

`renewauth demo` shows renewals against the embedded fake provider; `renewauth run`, `token`,
`check` and `keepalive` work from a TOML configuration; `renewauth vanmarcke …` runs Van Marcke's
service-user set-up steps. Errors end in one line on stderr and exit 1, never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import __version__
from .errors import AuthError, ConfigurationError

if TYPE_CHECKING:
    from .auth import TokenAuth

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="renewauth",
        description="Bearer tokens for requests and httpx, fetched and renewed for you.",
    )
    parser.add_argument("--version", action="version", version=f"renewauth {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show renewauth's DEBUG log (no secrets)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="watch renewals happen against a fake provider on loopback"
    )
    demo.add_argument(
        "--lifetime",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long the fake's access tokens live (default: 2)",
    )
    run = commands.add_parser(
        "run",
        help="run a command with renewing tokens in every Python process it starts",
        description=(
            "Run COMMAND with requests and httpx patched, in every Python process it starts, "
            "so that calls under the configured prefixes carry renewing tokens. The exit "
            "status is the command's."
        ),
    )
    run.add_argument("--config", required=True, metavar="FILE", help="the TOML configuration")
    run.add_argument(
        "--explain",
        action="store_true",
        help="log, once per origin and reason, why a request was signed or left alone",
    )
    run.add_argument(
        "command_line", nargs=argparse.REMAINDER, metavar="-- COMMAND …", help="what to run"
    )
    token = commands.add_parser("token", help="print a current access token of one entry")
    token.add_argument("--config", required=True, metavar="FILE", help="the TOML configuration")
    token.add_argument("name", metavar="NAME", help="the entry, as in [auth.NAME]")
    login = commands.add_parser(
        "login",
        help="log a person in once for an oauth2-authorization-code or oauth2-device-code entry",
        description=(
            "Run the first consent of one entry: a browser login (oauth2-authorization-code) "
            "or a code to enter on another device (oauth2-device-code). The token it brings "
            "is kept in the entry's store, and renewed from there by every later run."
        ),
    )
    login.add_argument("--config", required=True, metavar="FILE", help="the TOML configuration")
    login.add_argument("name", metavar="NAME", help="the entry, as in [auth.NAME]")
    login.add_argument(
        "--no-browser",
        action="store_true",
        help="only print the login URL (authorization code), do not open a browser",
    )
    login.add_argument(
        "--acr-values",
        metavar="NAMES",
        help="after an API asked for a stronger login (a StepUpRequired event or WARNING): "
        "the authentication context it named, space-separated (authorization code)",
    )
    login.add_argument(
        "--max-age",
        type=int,
        metavar="SECONDS",
        help="after a step-up: the most seconds since the person last logged in actively",
    )
    check = commands.add_parser(
        "check",
        help="fetch a token for every entry and report each (exit 0 ok, 1 warning, 2 failed)",
    )
    check.add_argument("--config", required=True, metavar="FILE", help="the TOML configuration")
    check.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object for machines; exit 0 all well, 1 warning, 2 failed",
    )
    keepalive = commands.add_parser(
        "keepalive",
        help="renew every entry whose refresh token is past half its life (for cron)",
        description=(
            "For every entry, renew the token when its refresh token is past half its life "
            "(see refresh_idle_timeout), through the entry's store; exit 1 if any entry "
            "failed. Run it more often than half the shortest refresh-token life."
        ),
    )
    keepalive.add_argument("--config", required=True, metavar="FILE", help="the TOML configuration")
    _add_vanmarcke(commands)
    return parser


# Python options that skip the bootstrap: -E and -I ignore PYTHONPATH, -S skips `site`.
_SKIPPING = {"E": "-E", "I": "-I", "S": "-S"}
_PYTHON = re.compile(r"(python|pypy)[0-9.]*(\.exe)?")


def _bootstrap_skipped_by(command: Sequence[str]) -> str | None:
    """The option of a `python …` command line that would skip renewauth's bootstrap."""
    if not command or not _PYTHON.fullmatch(os.path.basename(command[0])):
        return None
    arguments = iter(command[1:])
    for argument in arguments:
        if argument in {"--", "-"} or not argument.startswith("-"):
            return None  # the script: the rest is its own
        if argument.startswith("--"):
            continue
        for index, letter in enumerate(argument[1:], start=1):
            if letter in _SKIPPING:
                return _SKIPPING[letter]
            if letter in "cm":
                return None  # the rest is the code or the module and its arguments
            if letter in "WX":  # an option with a value: here or the next argument
                if index == len(argument) - 1:
                    next(arguments, None)
                break
    return None


def _run(config: str, command: list[str], *, verbose: bool, explain: bool) -> int:
    from .config import load_config

    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise ConfigurationError("nothing to run: renewauth run --config FILE -- COMMAND …")
    path = os.path.abspath(config)
    load_config(path)  # a broken file fails here, once, not in every child
    skipped_by = _bootstrap_skipped_by(command)
    if skipped_by is not None:
        print(
            f"renewauth run: WARNING: {os.path.basename(command[0])} {skipped_by} skips "
            "sitecustomize, so this process gets no tokens (its children may); drop "
            f"{skipped_by}, or call renewauth.retrofit.patch_from_config() in the program",
            file=sys.stderr,
        )
    bootstrap = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")
    environment = dict(os.environ)
    environment["RENEWAUTH_CONFIG"] = path
    # The parent's logging is lost at the exec: the bootstrap sets it up in every child.
    environment["RENEWAUTH_LOG_LEVEL"] = "DEBUG" if verbose else "INFO" if explain else "WARNING"
    if explain:
        environment["RENEWAUTH_EXPLAIN"] = "1"
    else:
        environment.pop("RENEWAUTH_EXPLAIN", None)
    environment["PYTHONPATH"] = os.pathsep.join(
        [bootstrap, *filter(None, [environment.get("PYTHONPATH")])]
    )
    try:
        os.execvpe(command[0], command, environment)  # noqa: S606 - running it is the point
    except OSError as exc:
        raise ConfigurationError(f"cannot run {command[0]!r}: {exc.strerror}") from None


def _entry(config: str, name: str) -> TokenAuth:
    from .config import load_config

    entries = load_config(config)
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise ConfigurationError(f"{config} has no entry [auth.{name}]; its entries: {known}")
    return entries[name].auth


def _token(config: str, name: str) -> int:
    # Printed on purpose: this command exists to hand the token to a shell.
    print(_entry(config, name).get_token().access_token)
    return 0


def _login(arguments: argparse.Namespace) -> int:
    from .consent import OAuth2AuthorizationCode, OAuth2DeviceCode

    name = arguments.name
    auth = _entry(arguments.config, name)
    step_up = arguments.acr_values is not None or arguments.max_age is not None
    if isinstance(auth, OAuth2AuthorizationCode):
        auth.login(
            open_browser=not arguments.no_browser,
            acr_values=(arguments.acr_values or "").split(),
            max_age=arguments.max_age,
        )
    elif isinstance(auth, OAuth2DeviceCode) and not step_up:
        auth.login()
    elif isinstance(auth, OAuth2DeviceCode):
        raise ConfigurationError(
            "--acr-values and --max-age go with an oauth2-authorization-code entry: the "
            "device flow cannot ask for a login context"
        )
    else:
        raise ConfigurationError(
            f"[auth.{name}] is a {type(auth).__name__}, which needs no login: only "
            "oauth2-authorization-code and oauth2-device-code entries start with a person's "
            "consent"
        )
    print(f"logged in: [auth.{name}] {auth!r}; the token is kept in its store", file=sys.stderr)
    return 0


def _store_kind(store: object) -> str:
    """The store's kind, never its address (a Redis URL may carry a password)."""
    from .stores import FileStore, MemoryStore, RedisStore

    kinds = ((MemoryStore, "memory"), (FileStore, "file"), (RedisStore, "redis"))
    return next((name for kind, name in kinds if isinstance(store, kind)), type(store).__name__)


def _check_entry(name: str, auth: TokenAuth, now: float) -> dict[str, object]:
    """One entry's report for `renewauth check`: the `--json` shape, no secret in it."""
    from .manager import refresh_warning_at

    report: dict[str, object] = {
        "name": name,
        "status": "failed",
        "access_expires_in": None,
        "refresh_expires_in": None,
        "store": _store_kind(auth.store),
        "last_renewal": None,
    }
    try:
        token = auth.get_token()
    except AuthError as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        return report
    idle_timeout = auth.refresh_idle_timeout
    ends_at = token.refresh_ends_at(idle_timeout)
    warning_at = refresh_warning_at(token, idle_timeout)
    report["status"] = "warning" if warning_at is not None and now >= warning_at else "ok"
    if token.expires_at is not None:
        report["access_expires_in"] = round(token.expires_at - now, 1)
    if ends_at is not None:
        report["refresh_expires_in"] = round(ends_at - now, 1)
    if token.issued_at is not None:
        report["last_renewal"] = round(max(now - token.issued_at, 0.0), 1)
    return report


def _seconds_text(seconds: object, unknown: str) -> str:
    return unknown if seconds is None else f"{seconds:.0f} s"


def _check(config: str, *, as_json: bool = False) -> int:
    from .config import load_config, prefix_hints

    try:
        entries = load_config(config)
    except AuthError as exc:  # monitoring must not read a broken file as a mere warning
        print(f"renewauth: error: {exc}", file=sys.stderr)
        return 2
    now = time.time()
    reports = [_check_entry(name, entry.auth, now) for name, entry in entries.items()]
    statuses = {report["status"] for report in reports}
    code = 2 if "failed" in statuses else 1 if "warning" in statuses else 0
    if as_json:
        shown = [
            {key: value for key, value in report.items() if key != "error"} for report in reports
        ]
        print(json.dumps({"entries": shown}))
        return code
    for report in reports:
        name = report["name"]
        if report["status"] == "failed":
            print(f"error  {name}: {report['error']}")
            continue
        print(
            f"{report['status']:<6} {name}: {entries[str(name)].auth!r}, access token "
            f"expires in {_seconds_text(report['access_expires_in'], 'no stated time')}, "
            f"refresh token ends in "
            f"{_seconds_text(report['refresh_expires_in'], 'no stated expiry')}, "
            f"store {report['store']}, renewed "
            f"{_seconds_text(report['last_renewal'], 'at an unknown time')} ago"
        )
    for name, entry in entries.items():
        for hint in prefix_hints(entry):
            print(f"hint   {name}: {hint}")
    return code


def _keepalive(config: str) -> int:
    from .config import load_config

    failures = 0
    for name, entry in load_config(config).items():
        try:
            renewed = entry.auth.keepalive()
        except AuthError as exc:
            failures += 1
            print(f"error    {name}: {type(exc).__name__}: {exc}")
            continue
        print(f"renewed  {name}" if renewed else f"not due  {name}")
    return 1 if failures else 0


def _add_vanmarcke(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .providers.vanmarcke import AUTHORIZE_URL, SERVICE_USERS_URL, TOKEN_URL

    vanmarcke = commands.add_parser(
        "vanmarcke", help="Van Marcke service-user set-up (experimental)"
    )
    steps = vanmarcke.add_subparsers(dest="step", metavar="STEP", required=True)
    for name, summary in (
        ("create-service-user", "create this application's service user and show it once"),
        ("reset-password", "give the service user a new password and show it once"),
    ):
        step = steps.add_parser(name, help=summary, description=summary)
        step.add_argument("--client-id", required=True, help="the application's client id")
        step.add_argument(
            "--api-key-env",
            default="VANMARCKE_API_KEY",
            metavar="NAME",
            help="environment variable holding the API key (default: VANMARCKE_API_KEY)",
        )
        login = step.add_mutually_exclusive_group(required=True)
        login.add_argument(
            "--username", help="the END user's name, for the password grant (or --browser)"
        )
        login.add_argument(
            "--browser",
            action="store_true",
            help="the END user logs in in a browser (authorization code with PKCE): for "
            "accounts with single sign-on or a second factor",
        )
        step.add_argument(
            "--password-env",
            metavar="NAME",
            help="environment variable holding the end user's password (else it is asked)",
        )
        step.add_argument(
            "--no-open",
            action="store_true",
            help="with --browser: only print the login URL, for a browser on another machine",
        )
        step.add_argument(
            "--client-secret-env", metavar="NAME", help="environment variable with the secret"
        )
        step.add_argument("--token-url", default=TOKEN_URL, help=f"default: {TOKEN_URL}")
        step.add_argument(
            "--authorize-url", default=AUTHORIZE_URL, help=f"default: {AUTHORIZE_URL}"
        )
        step.add_argument(
            "--service-users-url", default=SERVICE_USERS_URL, help=f"default: {SERVICE_USERS_URL}"
        )
        step.add_argument(
            "--output",
            metavar="FILE",
            help="write the credentials to this new file (mode 0600) instead of showing them",
        )
        if name == "reset-password":
            step.add_argument("--service-user", required=True, help="the service user's name")


def _secret(variable: str | None, prompt: str, *, required: bool = True) -> str | None:
    if variable:
        value = os.environ.get(variable)
        if not value:
            raise ConfigurationError(f"environment variable {variable} is not set or empty")
        return value
    if not required:
        return None
    if not sys.stdin.isatty():
        raise ConfigurationError(
            f"no terminal to ask for the {prompt}: pass it with an *-env option"
        )
    return getpass.getpass(f"{prompt}: ")


def _write_private(path: str, data: dict[str, str]) -> None:
    """Write `data` as JSON to a NEW file that only its owner can read."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(f"{path} exists already; choose a new --output file") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(data, file)
        file.write("\n")


def _run_vanmarcke(arguments: argparse.Namespace) -> int:
    from .providers.vanmarcke import VanMarcke

    if arguments.browser and arguments.password_env:
        raise ConfigurationError(
            "--password-env is for the password grant: with --browser the end user types "
            "the password in the browser; leave it out"
        )
    if arguments.no_open and not arguments.browser:
        raise ConfigurationError("--no-open goes with --browser (the login in a browser)")
    api_key = _secret(arguments.api_key_env, "API key") or ""
    client_secret = _secret(arguments.client_secret_env, "client secret", required=False)
    if arguments.browser:
        access_token = VanMarcke.log_in_end_user(
            client_id=arguments.client_id,
            api_key=api_key,
            client_secret=client_secret,
            authorize_url=arguments.authorize_url,
            token_url=arguments.token_url,
            open_browser=not arguments.no_open,
        )
    else:
        password = _secret(arguments.password_env, f"password of {arguments.username}") or ""
        end_user = VanMarcke(
            arguments.username,
            password,
            client_id=arguments.client_id,
            client_secret=client_secret,
            api_key=api_key,
            token_url=arguments.token_url,
        )
        access_token = end_user.get_token().access_token
    if arguments.step == "create-service-user":
        user = VanMarcke.create_service_user(
            access_token, api_key=api_key, url=arguments.service_users_url
        )
        username, new_password = user.username, user.password
    else:
        username = arguments.service_user
        new_password = VanMarcke.reset_service_user_password(
            access_token, api_key=api_key, username=username, url=arguments.service_users_url
        )
    if arguments.output:
        _write_private(arguments.output, {"username": username, "password": new_password})
        print(f"service user {username}: credentials written to {arguments.output} (0600)")
    else:
        # Shown once, on purpose: this is the one place the user can read it.
        print(f"service user: {username}\npassword: {new_password}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    arguments = parser.parse_args(argv)
    if arguments.verbose:
        logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("renewauth").setLevel(logging.DEBUG)
    try:
        if arguments.command == "demo":
            if not arguments.lifetime > 0.2:
                parser.error("--lifetime must be more than 0.2 seconds")
            from ._demo import run_demo

            return run_demo(lifetime=arguments.lifetime)
        if arguments.command == "vanmarcke":
            return _run_vanmarcke(arguments)
        if arguments.command == "run":
            return _run(
                arguments.config,
                arguments.command_line,
                verbose=arguments.verbose,
                explain=arguments.explain,
            )
        if arguments.command == "token":
            return _token(arguments.config, arguments.name)
        if arguments.command == "login":
            return _login(arguments)
        if arguments.command == "check":
            return _check(arguments.config, as_json=arguments.json)
        if arguments.command == "keepalive":
            return _keepalive(arguments.config)
    except AuthError as exc:
        print(f"renewauth: error: {exc}", file=sys.stderr)
        return 1
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover - `python -m renewauth.cli`
    sys.exit(main())
