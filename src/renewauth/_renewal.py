"""A renewal, step by step: from the store's lock to the stored token, written once.

Each method here that yields is a generator of effects (`_effects`): it says what to read,
write, lock, send or keep, in order, and receives the result or has the error thrown back.
`_effects.drive` runs it in a thread and `_effects.adrive` in a task, so the order of the
steps — read the store before checking the pause, share the pause before unlocking, write
before adopting — exists once, and the sync and async paths cannot drift apart.

The rules, in the order a leader meets them:

- **Kept first.** A token the store refused earlier (`_keeper`) is the newest there is:
  renew from it, and the writer writes the result.
- **Under the lock.** Take this machine's lock (a chain beside a store that is not a local
  file), then the store's; read the store and the spare copy, and adopt a valid token
  someone else renewed instead of renewing twice (`_timing.needs_renewal`).
- **One call.** Read the shared pause, call the token endpoint unless a pause stops it; a
  chain's new token goes to the spare copy at once. A chain whose refresh token is refused
  continues from a newer token of it in the store or the spare copy.
- **Stored before used.** Write the token over the generation read; a store that went back
  is written again; a store that refuses keeps the token in memory (the writer thread holds
  a chain's locks until it is written); a write fenced out adopts the other process's token.
- **Store down.** A grant that spends nothing shared renews in this process alone; a chain
  waits for its store (a refresh token is never spent twice).
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import cast

from ._effects import (
    Held,
    InThread,
    Keep,
    LockStore,
    Port,
    Put,
    PutSpare,
    Read,
    ReadSpare,
    Steps,
    Unlock,
    Write,
    both,
)
from ._endpoint import TokenEndpoint
from ._keeper import Keeper, Kept
from ._locking import StoreDown, taking_locks
from ._pauses import PauseState, fingerprint
from ._timing import continued, further_along, is_spent, keepalive_due, needs_renewal
from .errors import InvalidGrant, StoreError, TokenRequestError
from .flows import ChainGrant, Grant, RestartingChain, chain_grant
from .stores import FileStore, MemoryStore, default_store
from .stores._durable import describe_store, fell_back_to_memory
from .token import Token

__all__ = ["Renewal", "StoreDown", "in_memory", "invalidating"]

logger = logging.getLogger("renewauth.manager")


def in_memory(store: object) -> bool:
    """Whether `store` keeps tokens in this process only (nothing survives its exit)."""
    return isinstance(store, MemoryStore)


class Renewal:
    """The leader's steps for one credential, and the state they keep between renewals.

    Args:
        grant: what to send to get a token.
        port: the store, spare copy, locks and sender (`_effects.Port`).
        endpoint: the token call and its retries (`_endpoint.TokenEndpoint`).
        origin: the token endpoint's origin, for messages.
        clock: seconds since the epoch.
        own: the token this process holds (the manager's cache).
        adopt: makes a token the one this process sends.

    Attributes:
        generation: the store's generation of the token this process holds.
        pauses: when token calls pause (`_pauses.PauseState`).
        soft_retry_at: no soft-window renewal before this instant (one failed).
        keeper: the kept-token writer (`_keeper.Keeper`).
    """

    def __init__(
        self,
        grant: Grant,
        port: Port,
        endpoint: TokenEndpoint,
        origin: str,
        *,
        clock: Callable[[], float],
        own: Callable[[], Token | None],
        adopt: Callable[[Token], Token],
    ) -> None:
        self.grant = grant
        self.port = port
        self.endpoint = endpoint
        self.origin = origin
        self.clock = clock
        self.own = own
        self.adopt = adopt
        self.key = port.key
        self.generation = 0
        self.pauses = PauseState(shared=port.pauses is not None)
        self.soft_retry_at = -math.inf
        self.warned_local = False
        self.warned_memory = False
        self.fetched: Token | None = None  # the last token this process's own call fetched
        self.restarted = False  # whether the last token call ran a login's flow
        # A chain (a refresh token is the only credential) cannot be made again: it gets a
        # spare copy on this machine beside any store but memory, this machine's lock beside
        # a store that is not itself a local file, and pauses about one refresh token only.
        self.chain = chain_grant(grant)
        self.machine_lock = port.spare is not None and not isinstance(port.store, FileStore)
        self.keeper = Keeper(
            port,
            origin,
            chain=self.chain is not None,
            timeout=endpoint.timeout,
            stored=weakref.WeakMethod(self._stored),  # no cycle: dropped with the manager
        )

    # --- the leader -------------------------------------------------------------------

    def as_leader(self, stale: Token | None) -> Steps[tuple[Token, bool]]:
        """The new token, and whether it came from the token endpoint (else the store)."""
        kept = self.keeper.claim()
        if kept is not None:
            return (yield from self._renew_kept(kept, stale))
        try:
            return (yield from self._under_lock(stale))
        except StoreDown as down:
            return (yield from self._renew_locally(down.error))

    def _under_lock(self, stale: Token | None) -> Steps[tuple[Token, bool]]:
        machine, held = yield from taking_locks(
            stale, self._renewed_elsewhere, self.port, machine=self.machine_lock
        )
        if isinstance(held, Token):  # another process renewed: nothing more to lock for
            return held, False
        handed_over = False
        try:
            try:
                stored, generation = yield Read()
            except StoreError as exc:
                raise StoreDown(exc) from None
            # Another process, or a leader that finished just before us, may have renewed;
            # the store may have lost what was written (then ours or the spare is newer).
            spare = (yield ReadSpare()) if self.port.spare is not None else None
            current = self.current(stored, generation, spare)
            if not _restarting(self.chain) and not needs_renewal(current, stale, self.clock()):
                token = yield from self._taken(cast(Token, current), stored, generation, spare)
                return token, False
            yield from self.pauses.load(self.origin, self.clock, chain=self.chain is not None)
            try:
                token, fetched, generation = yield from self._fetch_chain(
                    current, stale, generation
                )
            except TokenRequestError as exc:
                # Still under the lock: the next process sees the pause this error starts
                # (only an error of a call made now: a pause raised again is not renewed).
                if exc is not self.pauses.reraised:
                    yield from self.pauses.share(
                        _named_store(exc, self.port, self.chain is not None and not self.restarted),
                        self.origin,
                        self.clock,
                    )
                raise
            if not fetched:
                return token, False
            yield from self.pauses.end()
            # The rotated refresh token is stored before the new access token is used (and
            # a chain's is in the spare copy already). If the store refuses it, it is kept
            # in memory and written by a thread that, for a chain, holds the locks until
            # then: the old refresh token is spent, this one must survive.
            try:
                written = yield Write(token, generation)
                if written is None:
                    written = yield from self._write_again(token, generation)
            except StoreError as exc:
                release = both(held.release, machine) if self.chain is not None else None
                handed_over = release is not None
                yield Keep(self.keeper, token, generation, release, exc)
                return self.announce(token), True
            if written is None:
                latest = yield from self._read_or_nothing()
                return self._fenced_out(token, latest), True
            self.generation = written
        finally:
            if not handed_over:
                yield Unlock(held)
                yield Unlock(machine)
        return self.announce(token), True

    def _renewed_elsewhere(
        self, stale: Token | None, stored: Token | None, generation: int, spare: Token | None
    ) -> Token | None:
        """`stored`, adopted, if a renewal under the lock would adopt it too (`_locking`)."""
        if stored is None or self.current(stored, generation, spare) is not stored:
            return None
        if _restarting(self.chain) or needs_renewal(stored, stale, self.clock()):
            return None
        logger.debug("token for %s renewed by another process; taken from the store", self.origin)
        self.generation = generation
        return self.adopt(stored)

    def _fetch_chain(
        self, current: Token | None, stale: Token | None, generation: int
    ) -> Steps[tuple[Token, bool, int]]:
        """A token call renewing `current`: the token, whether it was fetched (else adopted)
        and the store generation to write over. A chain whose refresh token is refused
        continues from a newer token of it in the store (read again) or the spare copy: a
        process that held the lock when the store forgot it may have written since."""
        try:
            return (yield from self._fetching(current)), True, generation
        except InvalidGrant:
            if self.chain is None or self.restarted:  # a refused login continues no chain
                raise
            stored, generation = yield from self._read_or_nothing()
            spare = (yield ReadSpare()) if self.port.spare is not None else None
            newer = self._newer_chain(current, stored, generation, spare)
            if newer is None:
                raise
        if not needs_renewal(newer, stale, self.clock()):
            return (yield from self._taken(newer, stored, generation, None)), False, generation
        return (yield from self._fetching(newer)), True, generation

    def _fetching(self, current: Token | None) -> Steps[Token]:
        """`_fetch`; a chain's in a thread of its own from a task: a task cancelled after the
        server rotated the refresh token (`asyncio.run` cancels what is left) would lose the
        new one, a thread runs on to the spare write (and `asyncio.run` waits for it)."""
        if self.chain is not None:
            return cast(Token, (yield InThread(self._fetch(current))))
        return (yield from self._fetch(current))

    def _fetch(self, current: Token | None) -> Steps[Token]:
        """One token call renewing `current`, unless a pause stops it. A chain's new token
        goes to the spare copy at once, before anything else can fail or be cancelled: the
        server has spent `current`'s refresh token."""
        pauses = self.pauses
        presented = self._presented(current)  # announces a waiting login, if any...
        self.restarted = _restarting(self.chain)  # ...whose flow this fetch then runs
        if not self.restarted:  # a login is not held by a pause (a device token is in hand)
            pauses.check(presented, self.clock)  # a pause stops token calls, never a read
        pauses.presenting, pauses.called = presented, True
        token = yield from self.endpoint.call(self.grant.fetch(current))
        token = self._fetched(token, current)
        if self.port.spare is not None:
            yield PutSpare(token)
        return token

    def _taken(
        self, token: Token, stored: Token | None, generation: int, spare: Token | None
    ) -> Steps[Token]:
        """Adopt a valid `token` found under the lock, giving it to the store if the store
        lost it (or never had it), and to the spare copy if it is further along."""
        logger.debug("token for %s taken from the store", self.origin)
        self.generation = generation
        if token is not stored:
            try:
                written = yield Write(token, generation)
            except StoreError:
                pass  # the next renewal tries again
            else:
                if written is not None:
                    self.generation = written
                    logger.info(
                        "the token store had lost the token for %s; it was written back",
                        self.origin,
                    )
        if self.port.spare is not None and (spare is None or token.sequence > spare.sequence):
            yield PutSpare(token)
        return self.adopt(token)

    def _write_again(self, token: Token, generation: int) -> Steps[int | None]:
        """After a fenced write was refused: write again if the store went back (emptied,
        restarted without persistence; for a chain, holding a token behind `token` whatever
        its generation says); `None` when another process wrote after our lock ran out."""
        latest, latest_generation = yield Read()
        if (
            latest is not None
            and latest_generation > generation
            and (self.chain is None or latest.sequence >= token.sequence)
        ):
            return None  # another process wrote after this one's lock ran out
        logger.warning(
            "the token store lost the token for %s during its renewal (emptied, or restarted "
            "without persistence); the renewed token is written again",
            self.origin,
        )
        return cast("int | None", (yield Write(token, latest_generation)))

    def _read_or_nothing(self) -> Steps[tuple[Token | None, int]]:
        try:
            return cast("tuple[Token | None, int]", (yield Read()))
        except StoreError:
            return None, self.generation

    def _newer_chain(
        self, refused: Token | None, stored: Token | None, generation: int, spare: Token | None
    ) -> Token | None:
        """After a chain's refresh token was refused: a token of the same chain further
        along than `refused`, from the store (read again) or the spare copy, or `None`."""
        best = further_along(refused, stored, spare)
        if best is not None:
            self.generation = generation
            logger.info(
                "the refresh token for %s was refused, but the store holds a newer one of "
                "its chain: continuing from that",
                self.origin,
            )
        return best

    def _renew_kept(self, kept: Kept, stale: Token | None) -> Steps[tuple[Token, bool]]:
        """Renew from the kept token, which only this process holds (the store is behind; for
        a chain the writer holds the locks meanwhile). If the server refuses it all the same
        (a store that lost that lock), a newer token of the chain is continued from."""
        try:
            if not _restarting(self.chain) and not needs_renewal(kept.token, stale, self.clock()):
                return self.adopt(kept.token), False
            token, fetched, _ = yield from self._fetch_chain(kept.token, stale, kept.generation)
            kept.token = token  # the writer thread writes this one now
            return (self.announce(token), True) if fetched else (token, False)
        finally:
            self.keeper.done(kept)

    def _renew_locally(self, error: StoreError) -> Steps[tuple[Token, bool]]:
        """Renew without the store, where that spends nothing another process needs: never a
        chain's refresh token (it must not be spent twice), but a login's first token."""
        if self.chain is not None and not _restarting(self.chain):
            raise error  # wait for the store
        if not self.warned_local:
            self.warned_local = True
            logger.warning(
                "the token store is unreachable (%s); renewing the token for %s in this "
                "process until it is back, then sharing it again",
                error,
                self.origin,
            )
        if self.chain is not None:  # a login's token: in the spare copy, then kept
            token = yield from self._fetch(self.own())
        else:
            self.pauses.check(None, self.clock)
            self.pauses.called = True
            token = yield from self.endpoint.call(self.grant.fetch(None))
            token = self._fetched(token, self.own())
        yield Keep(self.keeper, token, self.generation, None, error, quiet=True)
        return self.announce(token), True

    # --- what is renewed from, and what a fenced-out write adopts -------------------------

    def current(
        self, stored: Token | None, generation: int, spare: Token | None = None
    ) -> Token | None:
        """What to renew from: the store's token, unless the store lost what we wrote; for a
        chain, the furthest along of the three (the store's too, whatever its generation)."""
        own = self.own()
        best = stored
        if stored is None or (
            self.port.fenced and own is not None and generation < self.generation
        ):
            # Nothing stored, or an older generation than we saw (a Redis restarted without
            # persistence): our own token is the newest there is.
            best = stored if own is None else own
        if self.chain is None:
            return best  # a grant that loses nothing trusts the store, as before
        for other in (stored, own, spare):  # a Redis restarted empty: written since?
            if other is not None and (best is None or other.sequence > best.sequence):
                best = other
        return best

    def keepalive_target(
        self, stored: Token | None, generation: int, idle_timeout: float | None
    ) -> tuple[Token | None, bool]:
        """The token keepalive would renew from, and whether it is due (`keepalive_due`)."""
        if not self.grant.can_renew:
            return None, False
        current = self.current(stored, generation)
        return current, keepalive_due(current, idle_timeout, self.clock())

    def _fenced_out(self, token: Token, latest: tuple[Token | None, int]) -> Token:
        """Our write was refused: another leader wrote after our lock ran out. Its token is
        the store's; ours stays valid for this process alone."""
        stored, generation = latest
        logger.warning(
            "the renewed token for %s was not written: another process renewed after this "
            "one's store lock ran out (the store keeps the newer token)",
            self.origin,
        )
        if stored is not None and not is_spent(stored, self.clock()):
            self.generation = generation
            return self.announce(stored)
        return self.announce(token)

    def _stored(self, token: Token, written: int | None) -> None:
        """The writer thread is done with a kept token: `written` is its generation, or
        `None` when another process wrote meanwhile (it renewed while this one could not
        reach the store): the store's token is the shared one again when it is valid."""
        if written is not None:
            self.generation = written
            self.warned_local = False
            logger.info("the kept token for %s is in the store now", self.origin)
            return
        try:
            stored, generation = self.port.read()
        except Exception:
            return
        if stored is not None and not is_spent(stored, self.clock()):
            self.generation = generation
            self.adopt(stored)
        self.warned_local = False

    # --- what a fetched token is, and what its errors say ----------------------------------

    def _presented(self, current: Token | None) -> str | None:
        """The fingerprint of the refresh token a chain's renewal from `current` sends."""
        chain = self.chain
        return None if chain is None else fingerprint(chain.presents(current))

    def _fetched(self, token: Token, base: Token | None) -> Token:
        """A token the endpoint just gave, renewing `base`: placed on its chain, and the
        one warning a rotated refresh token kept only in memory gets."""
        token = self.fetched = continued(token, base)
        if not (self.warned_memory or self.restarted):
            self.warned_memory = _warned_in_memory(self, token, base)
        return token

    def announce(self, token: Token) -> Token:
        """Adopt a renewed token: soft-window retries and pauses are over."""
        self.adopt(token)
        self.soft_retry_at = -math.inf
        self.pauses.clear()
        if token.expires_at is not None:
            logger.debug(
                "token for %s renewed; expires in %.1f s",
                self.origin,
                token.expires_at - self.clock(),
            )
        else:
            logger.debug("token for %s renewed; no known expiry", self.origin)
        return token


def invalidating(renewal: Renewal) -> Steps[None]:
    """Expire the access token now, keeping its refresh token (the caller holds the flight):
    in the kept token when the store is behind, else in the store, under its lock, so that a
    token a concurrent renewal just wrote is not put back; in this process's copy alone when
    the store cannot be reached (the next renewal waits for it, or a login keeps its token)."""
    kept = renewal.keeper.current()
    if kept is not None:
        # The store is behind and its lock is the writer's: expire the kept token, which the
        # next renewal renews from (and the writer writes its result).
        kept.token = renewal.adopt(_expired(kept.token))
        return
    try:
        held = cast(Held, (yield LockStore()))
    except StoreError:
        own = renewal.own()
        if own is not None:
            renewal.adopt(_expired(own))
        return
    try:
        stored, generation = yield Read()
        spare = (yield ReadSpare()) if renewal.port.spare is not None else None
        current = renewal.current(stored, generation, spare)
        if current is not None:
            expired = _expired(current)
            yield Put(expired)
            renewal.adopt(expired)
            logger.debug("token for %s invalidated", renewal.origin)
    finally:
        yield Unlock(held)


def _expired(token: Token) -> Token:
    """`token` with its access token spent, its refresh token kept."""
    return replace(token, expires_at=token.issued_at or 0.0)


def _named_store(exc: TokenRequestError, port: Port, chain: bool) -> TokenRequestError:
    """`exc`; for a refused refresh token of a `chain` (not a login's refused code), its
    message naming where the chain was looked for: the store's kind and place, no secret."""
    if chain and isinstance(exc, InvalidGrant) and exc.args:
        if "newest refresh token was looked for" in str(exc.args[0]):
            return exc
        where = describe_store(port.store)
        if port.spare is not None:
            where += " and this machine's spare copies"
        exc.args = (
            f"{exc.args[0]} (its newest refresh token was looked for in {where}, "
            f"store key {port.key[:12]})",
            *exc.args[1:],
        )
    return exc


def _restarting(chain: ChainGrant | None) -> bool:
    """Whether a renewal of `chain` starts it again (a login): then it fetches whatever the
    store holds, and its token is no rotation of the one before."""
    return isinstance(chain, RestartingChain) and chain.restarting()


def _warned_in_memory(renewal: Renewal, token: Token, base: Token | None) -> bool:
    """Warn, and say so, when a chain's refresh token was just rotated into a store that
    forgets it at exit (not the durable default's memory fallback: warned about already)."""
    chain, store, origin = renewal.chain, renewal.port.store, renewal.origin
    rotated = (
        chain is not None
        and in_memory(store)
        and not (store is default_store() and fell_back_to_memory())
        and token.refresh_token is not None
        and token.refresh_token != chain.presents(base)
    )
    if rotated:
        logger.warning(
            "the refresh token for %s was rotated and lives only in this process's memory "
            "(store=MemoryStore()): when the process exits, the next run presents a "
            "spent one and is refused; pass store=FileStore(path) or RedisStore(url), or "
            "no store= for renewauth's durable default",
            origin,
        )
    return rotated
