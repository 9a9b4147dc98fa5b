"""The `renewauth` command and the runnable examples."""

from __future__ import annotations

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
