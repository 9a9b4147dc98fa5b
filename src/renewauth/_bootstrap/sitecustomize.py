"""Run by every Python process that `renewauth run` starts (this directory leads PYTHONPATH).

It first runs the `sitecustomize` that would have run without renewauth, if there is one,
then patches `requests` and `httpx` from the configuration named by RENEWAUTH_CONFIG. A broken
configuration stops the program with one line on stderr rather than let it run without tokens.
"""

import importlib.machinery
import importlib.util
import os
import sys


def _run_users_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    others = [entry for entry in sys.path if os.path.abspath(entry or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def _patch_from_config() -> None:
    path = os.environ.get("RENEWAUTH_CONFIG")
    if not path:
        return
    try:
        from renewauth.retrofit import patch_from_config
    except ImportError:
        raise SystemExit(
            f"renewauth run: renewauth is not installed for {sys.executable}; install it there "
            "or run the command with the Python that has it"
        ) from None
    from renewauth.errors import AuthError

    try:
        patch_from_config(path)
    except AuthError as exc:
        raise SystemExit(f"renewauth run: {exc}") from None


_run_users_sitecustomize()
_patch_from_config()
