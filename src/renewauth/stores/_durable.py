"""Where a refresh-token chain survives its process: the durable default and the spare copy.

A grant whose only credential is its chain (`flows.ChainGrant`: `OAuth2RefreshToken`, a
Keycloak technical user) cannot start again once the newest refresh token is lost, so:

- **The durable default.** Given no `store=`, such a grant keeps its token in a `FileStore`
  in the user's state directory (`durable_store()`): a script and `renewauth run` with the
  same credential share it, and the second run finds what the first one rotated. Where that
  directory cannot be used (a read-only container), the process-wide `MemoryStore` is used
  instead, with one WARNING that names the fix.
- **The spare copy.** Beside whatever store holds the chain, each process on this machine
  keeps the newest token of the chain it has seen in a `Spare`: a file per credential key
  in the state directory (and in `$XDG_RUNTIME_DIR`, a RAM disk, when the first place
  refuses it). A store that forgets (a Redis restarted without persistence, a deleted token
  file) or that refuses a write (a full disk, even until after the process exits) then
  costs nothing on this machine: the next renewal reads the spare too and continues from
  whichever token is furthest along the chain (`Token.sequence`).

Nothing here logs a token; every file is 0600 in a 0700 directory (`FileStore`'s rules).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigurationError, StoreError
from ..token import Token
from .file import FileStore
from .memory import MemoryStore, default_store

__all__ = [
    "STATE_DIR_VARIABLE",
    "Spare",
    "describe_store",
    "durable_store",
    "fell_back_to_memory",
    "state_directory",
]

logger = logging.getLogger("renewauth.stores")

STATE_DIR_VARIABLE = "RENEWAUTH_STATE_DIR"
"""The environment variable that moves renewauth's state directory (the durable default
store and the spare copies); by default the platform's per-user state directory."""

_lock = threading.Lock()
_stores: dict[Path, FileStore | None] = {}  # None: that directory could not be used
_told: set[Path] = set()
_fell_back = False  # whether a chain was given memory instead (and a WARNING said so)


def state_directory() -> Path:
    """renewauth's per-user state directory: `$RENEWAUTH_STATE_DIR`, else the platform's
    (`~/.local/state/renewauth` on Linux, honouring `$XDG_STATE_HOME`)."""
    chosen = os.environ.get(STATE_DIR_VARIABLE)
    if chosen:
        return Path(chosen).expanduser().absolute()  # the same place after a chdir
    import platformdirs

    return Path(platformdirs.user_state_dir("renewauth", appauthor=False))


def _file_store(directory: Path) -> FileStore | None:
    """The `FileStore` in `directory`, built once per process; `None` if it is unusable."""
    with _lock:
        if directory in _stores:
            return _stores[directory]
    try:
        store: FileStore | None = FileStore(directory)
    except ConfigurationError:
        store = None
    with _lock:
        return _stores.setdefault(directory, store)


def durable_store() -> FileStore | MemoryStore:
    """The store of a chain-only grant given no `store=`: a `FileStore` in
    `state_directory()/tokens`, else (one WARNING) the process-wide `MemoryStore`."""
    directory = state_directory() / "tokens"
    store = _file_store(directory)
    with _lock:
        first = directory not in _told
        _told.add(directory)
    if store is not None:
        if first:
            logger.info(
                "refresh-token chains without store= are kept in %s (renewauth's durable "
                "default; pass store= to choose another place)",
                directory,
            )
        return store
    global _fell_back  # noqa: PLW0603 - one flag for the process, set once
    _fell_back = True
    if first:
        logger.warning(
            "renewauth cannot keep tokens in %s (not a private directory it can create and "
            "write); refresh-token chains without store= live in this process's memory only, "
            "and the next run starts from the configured refresh token, which the server may "
            "have spent: set %s (or XDG_STATE_HOME) to a writable directory, or pass "
            "store=FileStore(path) or store=RedisStore(url)",
            directory,
            STATE_DIR_VARIABLE,
        )
    return default_store()


def fell_back_to_memory() -> bool:
    """Whether `durable_store()` gave the process-wide `MemoryStore` (and warned)."""
    return _fell_back


def describe_store(store: object) -> str:
    """Where a store keeps tokens, for a message: its kind and place, never a secret."""
    if isinstance(store, FileStore):
        return f"FileStore at {store.path}"
    if isinstance(store, MemoryStore):
        return "MemoryStore (this process's memory, gone when it exits)"
    name = type(store).__name__
    if name == "RedisStore":  # its repr cuts the URL before any password
        return repr(store).strip("<>")
    return f"the store {name}"


class Spare:
    """The spare copy of refresh-token chains on this machine (see the module docstring).

    Every method is best-effort and never raises: a spare that cannot be read or written
    only gives up the protection it adds. `places()` are tried in order for a write; a read
    takes the token furthest along the chain from all of them.
    """

    def places(self) -> list[Path]:
        """Where spare copies go: the state directory, then the user's runtime directory."""
        places = [state_directory() / "spare"]
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if runtime:
            places.append(Path(runtime) / "renewauth" / "spare")
        return places

    def _stores(self) -> Iterator[FileStore]:
        for place in self.places():
            store = _file_store(place)
            if store is not None:
                yield store

    def get(self, key: str) -> Token | None:
        """The spare token of `key` furthest along its chain, or `None`."""
        best: Token | None = None
        for store in self._stores():
            try:
                token = store.get(key)
            except StoreError:
                continue
            if token is not None and (best is None or token.sequence > best.sequence):
                best = token
        return best

    def put(self, key: str, token: Token) -> Path | None:
        """Keep `token` as the spare of `key`: the place that took it (or that holds a token
        further along the chain already), or `None`."""
        for store in self._stores():
            try:
                # A lock of its own (not `lock(key)`, which a renewing process holds): two
                # processes putting at once never leave the older token there.
                with store.lock(key + "put"):
                    held = store.get(key)
                    if held is None or held.sequence <= token.sequence:
                        store.set(key, token)
            except StoreError:
                continue
            return store.path
        return None

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """This machine's renewal lock of `key`, beside a shared store's own lock.

        A store that restarts empty loses its lock with its tokens; a process of this
        machine that asks then would take it while another one's refresh is in flight. This
        lock is an OS lock (`flock`) that dies with its holder, so it cannot be lost so."""
        for store in self._stores():
            try:
                held = store.lock(key)
                held.__enter__()
            except StoreError:
                continue
            try:
                yield
            finally:
                held.__exit__(None, None, None)
            return
        yield  # no place for a lock: the store's own lock is all there is
