"""The `renewauth` command and the runnable examples."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from renewauth.cli import main

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("*.py"))


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
