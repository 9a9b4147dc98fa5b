"""The package's public face and its layering."""

from __future__ import annotations

import subprocess
import sys
import types

import httpx
import requests

import renewauth
from renewauth import (
    BearerToken,
    OAuth2ClientCredentials,
    OAuth2Password,
    OAuth2RefreshToken,
)


def test_all_public_names_are_exported() -> None:
    public = {
        name
        for name, value in vars(renewauth).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - {"annotations"} == set(renewauth.__all__) - {"__version__"}
    assert sorted(renewauth.__all__) == renewauth.__all__


def test_sans_io_modules_import_neither_requests_nor_httpx() -> None:
    code = (
        "import sys\n"
        "import renewauth.flows, renewauth.oauth2, renewauth.manager\n"
        "assert 'requests' not in sys.modules, 'requests imported'\n"
        "assert 'httpx' not in sys.modules, 'httpx imported'\n"
    )
    # `import renewauth.flows` runs renewauth/__init__.py, which imports the transports; the
    # layering is checked by loading the three modules without the package's __init__.
    loader = (
        "import importlib.util, sys, types, pathlib\n"
        f"root = pathlib.Path({str(__import__('pathlib').Path(renewauth.__file__).parent)!r})\n"
        "package = types.ModuleType('renewauth'); package.__path__ = [str(root)]\n"
        "sys.modules['renewauth'] = package\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", loader + code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_every_auth_class_is_a_requests_and_an_httpx_auth() -> None:
    objects = [
        OAuth2ClientCredentials("https://idp.example.com/token", "id", "secret"),
        OAuth2Password("https://idp.example.com/token", "id", "user", "pw"),
        OAuth2RefreshToken("https://idp.example.com/token", "id", "refresh"),
        BearerToken("static-token"),
    ]
    for auth in objects:
        assert isinstance(auth, requests.auth.AuthBase)
        assert isinstance(auth, httpx.Auth)
        assert auth.token is None or auth.token.access_token == "static-token"
