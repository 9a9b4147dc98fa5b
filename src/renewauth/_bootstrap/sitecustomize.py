"""Run by every Python process that `renewauth run` starts (this directory leads PYTHONPATH).

It runs the `sitecustomize` that would have run without renewauth, if there is one, then
waits: only once the program has imported `requests`, `httpx`, an httpx fork (`httpx2`) or
`aiohttp` does it load renewauth, send renewauth's log to stderr (WARNING and up;
`renewauth -v run` adds DEBUG, `--explain` the INFO lines that say why each origin was signed
or left alone) and patch them from the configuration named by RENEWAUTH_CONFIG. A program that
never imports any of them gets nothing but this file. A broken configuration stops the program
with one line on stderr rather than let it run without tokens.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

# renewauth.retrofit.PATCHED_ON_IMPORT names the same optional libraries; it cannot be imported
# here this early.
_WATCHED = frozenset({"requests", "httpx", "httpx2", "aiohttp"})


def _run_users_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    others = [entry for entry in sys.path if os.path.abspath(entry or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def _log_to_stderr() -> None:
    """renewauth's records on stderr, tagged with the process id: a legacy program has
    usually configured no logging, and a NullHandler would swallow every WARNING."""
    import logging

    level = os.environ.get("RENEWAUTH_LOG_LEVEL", "WARNING")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s renewauth[%(process)d] %(levelname)s %(name)s: %(message)s")
    )
    package = logging.getLogger("renewauth")
    package.addHandler(handler)
    package.setLevel(level if level in ("DEBUG", "INFO", "WARNING") else "WARNING")


def _patch_from_config() -> None:
    try:
        from renewauth.retrofit import patch_from_config
    except ImportError:
        raise SystemExit(
            f"renewauth run: renewauth is not installed for {sys.executable}; install it there "
            "or run the command with the Python that has it"
        ) from None
    from renewauth.errors import AuthError

    _log_to_stderr()
    try:
        patch_from_config(
            os.environ["RENEWAUTH_CONFIG"], explain=os.environ.get("RENEWAUTH_EXPLAIN") == "1"
        )
    except AuthError as exc:
        raise SystemExit(f"renewauth run: {exc}") from None


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it wraps the loader of each watched module imported, and patches
    once one of them has really loaded.

    A watched import can fail, and programs expect it to: gql and others try
    `import httpx2 as httpx` and fall back to httpx on ImportError. So the finder stays in
    place until a watched module has run to the end (it may find no spec, or its code may
    raise), then removes itself: renewauth patches the others itself. It patches only when no
    watched import is still running: a fork whose own code imports httpx would otherwise be
    judged half-initialized.
    """

    def __init__(self) -> None:
        self._finding: set[str] = set()  # names being looked up: find_spec asks us again
        self._running: list[str] = []  # watched modules whose code is running, in any thread
        self._loaded = False
        self._patched = False

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in _WATCHED or name in self._finding or self._patched:
            return None
        self._finding.add(name)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._finding.discard(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec  # not installed: the program may import another watched module next
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            self._running.append(name)
            try:
                original(module)
                self._loaded = True
            except BaseException:
                # importlib drops a module that failed right after this; a patch applied below
                # must not take what it left in sys.modules for a loaded fork.
                if sys.modules.get(name) is module:
                    del sys.modules[name]
                raise
            finally:
                self._running.remove(name)
                if self._loaded and not self._running:
                    self._patch_once()

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec

    def _patch_once(self) -> None:
        if self._patched:
            return
        self._patched = True
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        _patch_from_config()


_run_users_sitecustomize()
if os.environ.get("RENEWAUTH_CONFIG"):
    if _WATCHED & sys.modules.keys():  # the user's sitecustomize imported one already
        _patch_from_config()
    else:
        sys.meta_path.insert(0, _PatchOnImport())
