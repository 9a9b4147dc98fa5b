"""The package's public face and its layering."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import types

import httpx
import pytest
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


# The modules whose `__all__` is the public API (docs/stability.md); the reference renders
# exactly these names, from their docstrings.
PUBLIC_MODULES = (
    "renewauth",
    "renewauth.errors",
    "renewauth.providers",
    "renewauth.testing",
    "renewauth.testing.pytest_plugin",
)


def _undocumented(name: str, value: object) -> list[str]:
    """`name` and its public methods and properties that have no docstring of their own.

    A store's `TokenStore` and `PauseStore` methods are documented once, on the protocols,
    and a method that implements another library's interface (`httpx.Auth.sync_auth_flow`)
    by that library.
    """
    own = value.__dict__.get("__doc__") if inspect.isclass(value) else inspect.getdoc(value)
    missing = [] if own else [name]
    if not inspect.isclass(value):
        return missing
    protocol = (
        set(vars(renewauth.TokenStore)) | set(vars(renewauth.stores.PauseStore))
        if isinstance(value, type)
        else set()
    )
    implements_store = all(hasattr(value, method) for method in ("get", "set", "lock", "alock"))
    foreign = {
        attribute
        for klass in value.__mro__
        if not klass.__module__.startswith("renewauth")
        for attribute in vars(klass)
    }
    for klass in value.__mro__:
        if not klass.__module__.startswith("renewauth"):
            continue
        for attribute, member in vars(klass).items():
            if attribute.startswith("_") or attribute in foreign:
                continue
            if implements_store and attribute in protocol:
                continue
            function = member.fget if isinstance(member, property) else member
            function = getattr(function, "__func__", function)
            if (inspect.isfunction(function) or isinstance(member, property)) and not (
                function.__doc__ or ""
            ).strip():
                missing.append(f"{name}.{attribute}")
    return missing


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_module_all_lists_what_it_defines_sorted(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    assert [name for name in exported if not hasattr(module, name)] == []
    defined_here = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__.startswith(module_name)
    }
    assert defined_here - set(exported) == set(), "public but not in __all__"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert (module.__doc__ or "").strip(), f"{module_name} has no module docstring"
    missing = [
        gap
        for name in module.__all__
        if name != "__version__"
        for gap in _undocumented(f"{module_name}.{name}", getattr(module, name))
    ]
    assert missing == []
