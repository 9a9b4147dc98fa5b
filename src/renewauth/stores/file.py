"""`FileStore`: tokens in private files, shared by every process on one machine.

One JSON file per credential key in a directory only its owner can enter (0700), each file
0600, written to a temporary file, fsynced and renamed, so a reader sees the old token or the
new one, never half of one. A lock file per key (`filelock`, an OS lock that dies with its
process) serialises renewals across processes; under it the renewing process reads the store
again and adopts a token that another process has just written.

A process reads a file only when its own copy of the token needs renewal: while the token is
fresh, requests cost no file access. While token calls are paused (credentials refused, a long
`Retry-After`), `{key}.pause` beside the token says until when, for every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigurationError, StoreError
from ..token import Token
from ._pause import Pause

if TYPE_CHECKING:
    import filelock

__all__ = ["FileStore"]

logger = logging.getLogger(__name__)

# Seconds to wait for another process's renewal; a renewal is bounded far below this by its
# timeout and retries, so reaching it means something is stuck.
_LOCK_TIMEOUT = 300.0


class FileStore:
    """Tokens in files under `path`, shared by the processes of one machine.

    Works on one machine (a local file system with working `flock`); for several machines use
    `RedisStore`.

    Args:
        path: the directory; created with mode 0700 if missing. It must not be readable by
            group or others, since its files hold refresh tokens.

    Raises:
        ConfigurationError: `path` cannot be used, or is open to other users.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import filelock

        self._filelock = filelock
        self.path = Path(path).expanduser()  # "~/.cache/app" means the user's home
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            mode = self.path.stat().st_mode & 0o777
        except OSError as exc:
            raise ConfigurationError(
                f"FileStore cannot use {self.path}: {exc.strerror}; pass a directory you own"
            ) from None
        if mode & 0o077:
            raise ConfigurationError(
                f"FileStore directory {self.path} is open to other users (mode {mode:o}); "
                f"run: chmod 700 {self.path}"
            )

    def __repr__(self) -> str:
        return f"<FileStore {str(self.path)!r}>"

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled by its path, so another process on this machine shares the same files."""
        return (FileStore, (str(self.path),))

    def _file(self, key: str) -> Path:
        if not key.isalnum():
            raise ValueError("store keys are credential fingerprints (hex digits)")
        return self.path / f"{key}.json"

    def get(self, key: str) -> Token | None:
        return self.get_with_generation(key)[0]

    def get_with_generation(self, key: str) -> tuple[Token | None, int]:
        """The stored token (or `None`) and the generation it was written at (0: never)."""
        file = self._file(key)
        try:
            data = json.loads(file.read_bytes())
            if isinstance(data, dict):
                generation = data.get("generation", 0)
                if isinstance(generation, bool) or not isinstance(generation, int):
                    generation = 0
                return Token.from_dict(data), generation
        except FileNotFoundError:
            return None, 0
        except (ValueError, TypeError, RecursionError):
            pass
        except OSError as exc:
            raise StoreError(
                f"the token store cannot read the token file {file}: {exc.strerror}; check "
                "its permissions"
            ) from None
        logger.warning("token file %s is corrupt or truncated; treating it as empty", file)
        return None, 0

    def set(self, key: str, token: Token) -> None:
        self._write(key, token, self._generation_of(key) + 1)

    def set_if_generation(self, key: str, token: Token, generation: int) -> int | None:
        """Write `token` only if the stored generation is still `generation`.

        Call it under `lock(key)`: the lock makes the compare and the write one step.

        Returns:
            The new generation, or `None` when another writer moved it on (nothing written).
        """
        # A file that cannot be read raises here: taken for "no generation", it would look
        # like a store that lost its data, and the token would be written again on top.
        if self.get_with_generation(key)[1] != generation:
            return None
        self._write(key, token, generation + 1)
        return generation + 1

    def _generation_of(self, key: str) -> int:
        try:
            return self.get_with_generation(key)[1]
        except StoreError:
            return 0

    def _write(self, key: str, token: Token, generation: int) -> None:
        file = self._file(key)
        payload = json.dumps({**token.to_dict(), "generation": generation}).encode()
        self._replace(file, payload, "token file")

    def _replace(self, file: Path, payload: bytes, what: str) -> None:
        """Write `payload` as `file` in one step: a reader sees the old file or the new."""
        try:
            descriptor, temporary = tempfile.mkstemp(dir=self.path, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(descriptor, "wb") as handle:  # mkstemp creates it 0600
                    handle.write(payload)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, file)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            _fsync_directory(self.path)
        except OSError as exc:
            # The renewing process keeps the token in memory and writes it again as soon as
            # the disk takes it (the manager's rule: no refresh token is ever lost).
            raise StoreError(
                f"the token store cannot write the {what} {file}: {exc.strerror}"
            ) from None

    def delete(self, key: str) -> None:
        self._unlink(self._file(key), "token file")

    def _unlink(self, file: Path, what: str) -> None:
        try:
            file.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(
                f"the token store cannot delete the {what} {file}: {exc.strerror}"
            ) from None

    def _pause_file(self, key: str) -> Path:
        return self._file(key).with_suffix(".pause")

    def get_pause(self, key: str) -> Pause | None:
        """The pause recorded for `key` (`{key}.pause`), or `None`."""
        file = self._pause_file(key)
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(
                f"the token store cannot read the pause file {file}: {exc.strerror}; check "
                "its permissions"
            ) from None
        try:
            return Pause.from_dict(json.loads(raw))
        except (ValueError, TypeError, RecursionError):
            return None  # a torn or foreign file pauses nothing

    def set_pause(self, key: str, pause: Pause) -> None:
        self._replace(self._pause_file(key), json.dumps(pause.to_dict()).encode(), "pause file")

    def delete_pause(self, key: str) -> None:
        self._unlink(self._pause_file(key), "pause file")

    async def aget_pause(self, key: str) -> Pause | None:
        return await asyncio.to_thread(self.get_pause, key)

    async def aset_pause(self, key: str, pause: Pause) -> None:
        await asyncio.to_thread(self.set_pause, key, pause)

    async def adelete_pause(self, key: str) -> None:
        await asyncio.to_thread(self.delete_pause, key)

    def lock(self, key: str) -> AbstractContextManager[object]:
        return self._locked(key)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        lock = self._lock_for(key)
        self._acquire(lock)
        try:
            yield
        finally:
            lock.release()

    def try_lock(self, key: str) -> AbstractContextManager[bool]:
        """Take the renewal lock of `key` only if it is free: the context gives whether it
        did, and lets go of it on exit."""
        return self._tried(key)

    @contextlib.contextmanager
    def _tried(self, key: str) -> Iterator[bool]:
        lock = self._lock_for(key)
        if not self._acquire(lock, blocking=False):
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def atry_lock(self, key: str) -> AbstractAsyncContextManager[bool]:
        """`try_lock` for asyncio (the lock file is made in a worker thread)."""
        return self._atried(key)

    @contextlib.asynccontextmanager
    async def _atried(self, key: str) -> AsyncIterator[bool]:
        lock = self._lock_for(key)
        held = await asyncio.to_thread(self._acquire, lock, blocking=False)
        try:
            yield held
        finally:
            if held:
                lock.release()

    def _acquire(self, lock: filelock.BaseFileLock, *, blocking: bool = True) -> bool:
        """Take `lock`; a lock file that cannot be made (a read-only or full file system)
        is a `StoreError` naming it, like every other failure of this store."""
        try:
            lock.acquire(timeout=_LOCK_TIMEOUT, blocking=blocking)
        except self._filelock.Timeout:
            if not blocking:
                return False
            raise self._stuck() from None
        except OSError as exc:
            raise StoreError(
                f"the token store cannot take its lock {lock.lock_file}: {exc.strerror}; "
                f"check that {self.path} is writable"
            ) from None
        return True

    def _stuck(self) -> StoreError:
        return StoreError(
            f"another process has held the renewal lock in {self.path} for "
            f"{_LOCK_TIMEOUT:.0f} s; it may be stuck"
        )

    def _lock_for(self, key: str) -> filelock.BaseFileLock:
        # thread_local=False: the async path acquires and releases in worker threads.
        return self._filelock.FileLock(
            str(self.path / f"{key}.lock"), mode=0o600, thread_local=False
        )

    async def aget(self, key: str) -> Token | None:
        return await asyncio.to_thread(self.get, key)

    async def aset(self, key: str, token: Token) -> None:
        await asyncio.to_thread(self.set, key, token)

    async def aget_with_generation(self, key: str) -> tuple[Token | None, int]:
        """`get_with_generation` without blocking the event loop."""
        return await asyncio.to_thread(self.get_with_generation, key)

    async def aset_if_generation(self, key: str, token: Token, generation: int) -> int | None:
        """`set_if_generation` without blocking the event loop."""
        return await asyncio.to_thread(self.set_if_generation, key, token, generation)

    async def adelete(self, key: str) -> None:
        await asyncio.to_thread(self.delete, key)

    def alock(self, key: str) -> AbstractAsyncContextManager[object]:
        return self._alocked(key)

    @contextlib.asynccontextmanager
    async def _alocked(self, key: str) -> AsyncIterator[None]:
        lock = self._lock_for(key)
        # Waited for in a worker thread: the event loop keeps running meanwhile.
        await asyncio.to_thread(self._acquire, lock)
        try:
            yield
        finally:
            lock.release()


def _fsync_directory(path: Path) -> None:
    """Make the rename itself durable (POSIX needs the directory fsynced too)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
