"""What each `RedisStore` operation asks of Redis, as the steps it runs; no I/O.

`RedisOps` holds one store's key names and writes every operation once, as a generator of
`_redis_steps` steps (a command, a transaction, a wait) that `RedisStore`'s two drivers carry
out, the one blocking, the other awaiting.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from ..token import Token
from ._pause import Pause
from ._redis_steps import Call, Hold, Step, Steps, Transaction, Wait, failure
from ._redis_steps import asking as asking_redis

__all__ = ["RedisOps"]

# The records belong to RedisStore, whatever module decides them.
logger = logging.getLogger("renewauth.stores.redis")

# Write the token only if the generation is still the one read under the lock; return the
# new generation, or -1 when another writer has moved it on. The token is also left, for a
# few seconds, in the notice list of the generation it replaces (KEYS[3]), where every process
# waiting for this renewal blocks (`written_after`): one write wakes them all, none polls.
_SET_IF_GENERATION = """
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current ~= tonumber(ARGV[2]) then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
local written = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[3])
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return written
"""
_NOTICE_LIFE_MS = 5_000  # how long a renewal's notice list outlives its write


class RedisOps:
    """The operations of one `RedisStore`, as steps.

    Args:
        prefix: the prefix of every key.
        lease: seconds a renewal lock lives without being extended.
        where: the Redis, for messages (never with a password).
        errors: what the client raises when Redis does not answer.
        command_timeout: seconds one command may take on the store's connections (a blocking
            wait stays under it); `None`: no limit.

    Attributes:
        notices: the server has `BLMOVE` (Redis 6.2+): waiters are woken by the write.
    """

    def __init__(
        self,
        prefix: str,
        lease: float,
        *,
        where: str,
        errors: tuple[type[Exception], ...],
        command_timeout: float | None,
    ) -> None:
        self.prefix = prefix
        self.lease = lease
        self.where = where
        self.errors = errors
        self.command_timeout = command_timeout
        self.notices = True

    def keys(self, key: str) -> tuple[str, str, str]:
        return (
            f"{self.prefix}token:{key}",
            f"{self.prefix}generation:{key}",
            f"{self.prefix}lock:{key}",
        )

    def pause_key(self, key: str) -> str:
        return f"{self.prefix}pause:{key}"

    def notice_key(self, key: str, generation: int) -> str:
        return f"{self.prefix}renewed:{key}:{generation}"

    def asking(self, what: str, step: Step) -> Steps[Any]:
        return (yield from asking_redis(step, what, self.where, self.errors))

    def reading(self, key: str) -> Steps[tuple[Token | None, int]]:
        token_key, generation_key, _ = self.keys(key)
        raw, generation = yield from self.asking(
            "read a token", Call(("MGET", token_key, generation_key))
        )
        try:
            number = int(generation or 0)
        except ValueError:
            number = 0
        return (None if raw is None else self.parse(key, raw)), number

    def parse(self, key: str, raw: bytes | str) -> Token | None:
        try:
            data = json.loads(raw)
            if isinstance(data, dict):
                return Token.from_dict(data)
        except (ValueError, TypeError, RecursionError):
            pass
        logger.warning("token %s in %s is corrupt; treating it as empty", key[:8], self.where)
        return None

    def writing(self, key: str, token: Token) -> Steps[None]:
        token_key, generation_key, _ = self.keys(key)
        payload = json.dumps(token.to_dict())
        write = Transaction((("SET", token_key, payload), ("INCR", generation_key)))
        yield from self.asking("store a token", write)

    def writing_if(self, key: str, token: Token, generation: int) -> Steps[int | None]:
        token_key, generation_key, _ = self.keys(key)
        payload = json.dumps(token.to_dict())
        notices = self.notice_key(key, generation)
        keys = (token_key, generation_key, notices)
        write = Call(("EVAL", _SET_IF_GENERATION, 3, *keys, payload, generation, _NOTICE_LIFE_MS))
        number = int((yield from self.asking("store a token", write)))
        return None if number < 0 else number

    def waiting_written(self, key: str, generation: int, timeout: float) -> Steps[Token | None]:
        # A blocking read that leaves the token in the list (moved onto itself), so the write
        # wakes every waiter, and one that comes after it returns at once. It waits less than
        # a command may take (`socket_timeout`, or a given client's own), so that a silent
        # Redis is still told apart and a wait never times out as if Redis were down.
        notices = self.notice_key(key, generation)
        limit = self.command_timeout
        seconds = round(max(timeout if limit is None else min(timeout, limit / 2), 0.01), 3)
        if not self.notices:  # a Redis older than 6.2: no notices, a pause instead
            yield Wait(seconds)
            return None
        try:
            raw = yield Call(("BLMOVE", notices, notices, "RIGHT", "LEFT", seconds))
        except self.errors as exc:
            if "unknown command" not in str(exc).lower():
                raise failure("wait for another process's renewal", self.where, exc) from None
            self.notices = False
            logger.info(
                "Redis at %s has no BLMOVE (older than 6.2): processes waiting for another's "
                "renewal look at the store again every %.1f s instead of being woken",
                self.where,
                seconds,
            )
            yield Wait(seconds)
            return None
        return None if raw is None else self.parse(key, raw)

    def deleting(self, key: str) -> Steps[None]:
        yield from self.asking("delete a token", Call(("DEL", self.keys(key)[0])))

    def reading_pause(self, key: str) -> Steps[Pause | None]:
        raw = yield from self.asking("read a pause", Call(("GET", self.pause_key(key))))
        return _pause_from(raw)

    def writing_pause(self, key: str, pause: Pause) -> Steps[None]:
        payload = json.dumps(pause.to_dict())
        write = Call(("SET", self.pause_key(key), payload, "PX", _expiry(pause)))
        yield from self.asking("store a pause", write)

    def deleting_pause(self, key: str) -> Steps[None]:
        yield from self.asking("delete a pause", Call(("DEL", self.pause_key(key))))

    def hold(self, key: str) -> Hold:
        return Hold(
            lock_key=self.keys(key)[2], lease=self.lease, where=self.where, errors=self.errors
        )


def _pause_from(raw: Any) -> Pause | None:
    if raw is None:
        return None
    try:
        return Pause.from_dict(json.loads(raw))
    except (ValueError, TypeError, RecursionError):
        return None  # a corrupt record pauses nothing


def _expiry(pause: Pause) -> int:
    """Milliseconds Redis keeps a pause: until a minute after it ends by this machine's clock
    (at least a minute, at most a day). The managers judge `until` with their own clock; the
    expiry only clears records that no success deleted."""
    left = min(max(pause.until - time.time(), 0.0), 86_400.0)
    return int((left + 60.0) * 1000)
