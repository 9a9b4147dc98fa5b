"""Every line retrofit logs about requests: explanations, warnings and token failures.

A legacy program usually shows nothing of what renewauth did to its requests, so what is
surprising is said once, at WARNING, with the way to choose otherwise: the program's own
Bearer token met, that token rejected, a 401 to a request left alone, a body that cannot be
resent. Why each request was signed or left alone is said once per origin and reason, at INFO
with `explain=True` (`renewauth run --explain`) and at DEBUG otherwise. Every line goes to the
`renewauth.retrofit` logger and names origins, prefixes, schemes and class names only, never
a header's value.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from urllib.parse import SplitResult, urlsplit

from .._routing import TABLE, Route
from .._urls import is_loopback_host, origin_of
from ..errors import AuthError

__all__ = [
    "explain",
    "explain_unmatched",
    "logger",
    "report_success",
    "reporting",
    "warn_about_existing_bearer",
    "warn_about_rejection",
    "warn_if_rejected",
    "warn_not_resent",
    "warn_own_step_up",
]

#: The package's logger, whichever module of it writes the line.
logger = logging.getLogger("renewauth.retrofit")


def _explain_level() -> int:
    return logging.INFO if TABLE.explain else logging.DEBUG


def explain(origin: str, reason: str) -> None:
    """Log why a request was signed or left alone, once per (origin, reason)."""
    level = _explain_level()
    if logger.isEnabledFor(level) and TABLE.first_explanation(origin, reason):
        logger.log(level, "%s: %s", origin, reason)


def explain_unmatched(url: str) -> None:
    """Explain a request that no prefix matches, naming a prefix it may have been meant for."""
    if not TABLE.routes or not logger.isEnabledFor(_explain_level()):
        return
    reason = "left alone: matches no prefix"
    nearest = _nearest_prefix(url)
    if nearest:
        reason += f"; nearest: {nearest}"
    explain(origin_of(url), reason)


def _host_family(host: str) -> str:
    return "loopback" if is_loopback_host(host) else host.lower().strip("[]")


def _nearest_prefix(url: str) -> str | None:
    """A prefix that differs from `url` only in scheme, port or a loopback alias, or whose
    origin is the same but whose path does not cover it, described for a log line."""
    parts = urlsplit(url)
    origin = origin_of(url)
    for route in TABLE.routes:
        target = urlsplit(route.prefix)
        named = route.label if route.label.startswith("prefix") else f"{route.label} {route.prefix}"
        if route.origin == origin:
            return f"{named}, which covers other paths on this origin"
        if _host_family(parts.hostname or "") != _host_family(target.hostname or ""):
            continue
        if not route.covers(parts.path.rstrip("/")):
            continue
        differences = []
        if parts.scheme.lower() != target.scheme.lower():
            differences.append("scheme")
        if (parts.hostname or "").lower() != (target.hostname or "").lower():
            differences.append("host (another name for loopback)")
        if origin_of(f"x://h:{_port(parts)}") != origin_of(f"x://h:{_port(target)}"):
            differences.append("port")
        if differences:
            return f"{named}, which differs in {' and '.join(differences)}"
    return None


def _port(parts: SplitResult) -> int:
    try:
        port = parts.port
    except ValueError:
        port = None
    return int(port if port is not None else {"http": 80, "https": 443}.get(parts.scheme, 0))


def warn_about_existing_bearer(route: Route, origin: str) -> None:
    """Say once per (route, origin) what happens to the program's own Bearer token."""
    if not route.state.first_time(origin, "existing"):
        return
    mode = route.existing_bearer
    if mode == "replace":
        what = (
            f"renewauth replaces it with the token of {route.label}, so the API sees that "
            "principal instead of the program's"
        )
        others = ("keep-until-401", "keep")
    elif mode == "keep":
        what = f"renewauth leaves it and never sends the token of {route.label}"
        others = ("keep-until-401", "replace")
    else:
        what = (
            "renewauth sends it as it is until the API rejects it, then resends once with the "
            f"token of {route.label} and sends that one in its place from then on"
        )
        others = ("keep", "replace")
    logger.warning(
        "requests to %s carry their own Bearer token; %s (existing_bearer=%r). "
        "To choose otherwise set %s or %s",
        origin,
        what,
        mode,
        route.setting.format(mode=others[0]),
        route.setting.format(mode=others[1]),
    )


def warn_about_rejection(route: Route, origin: str) -> None:
    """Say once per (route, origin) that the API rejected the program's own Bearer token."""
    if route.state.first_time(origin, "rejected"):
        logger.warning(
            "%s rejected the program's own Bearer token; renewauth resends with the token of "
            "%s and sends that one in place of the rejected token from now on "
            "(existing_bearer='keep-until-401'; to never replace it set %s)",
            origin,
            route.label,
            route.setting.format(mode="keep"),
        )


def warn_own_step_up(route: Route, origin: str, status: int) -> None:
    """Say once per (route, origin) that the API asked the program's own Bearer token for a
    stronger login (RFC 9470), which renewauth leaves to the program."""
    if route.state.first_time(origin, "step-up"):
        logger.warning(
            "%s answered %d asking for a stronger login (RFC 9470 step-up) to the program's "
            "own Bearer token; returned as it is, not replaced with the token of %s: the "
            "program's user must log in again as asked",
            origin,
            status,
            route.label,
        )


def warn_not_resent(route: Route, origin: str, status: int) -> None:
    """Say that a rejected request is not resent: its body cannot be replayed."""
    logger.warning(
        "%s answered %d; not resending: the request body is a stream that cannot be "
        "replayed (the next request is sent with the token of %s)",
        origin,
        status,
        route.label,
    )


def warn_if_rejected(route: Route, origin: str, reason: str, status: int) -> None:
    """A request under a route that renewauth left alone came back 401: say once per (route,
    origin) why it was left alone, since the program will only see its 401s."""
    if status == 401 and route.state.first_time(origin, "left alone, rejected"):
        logger.warning(
            "%s answered 401 to a request under %s that renewauth did not sign: %s. "
            "`renewauth run --explain` lists every such decision",
            origin,
            route.label,
            reason.removeprefix("left alone: "),
        )


@contextlib.contextmanager
def reporting(route: Route) -> Iterator[None]:
    """Around a token's use under `route`: a failure is logged (`_report_failure`) and
    raised on."""
    try:
        yield
    except AuthError as exc:
        _report_failure(route, exc)
        raise


def _report_failure(route: Route, exc: AuthError) -> None:
    """Log a token failure at ERROR once per distinct failure in a row: legacy code may wrap
    the exception in its own ("Can't connect to server") or swallow it."""
    failure = (type(exc).__name__, str(exc))
    with route.state.lock:
        if route.state.failure == failure:
            return
        route.state.failure = failure
    if route.label.startswith("prefix"):
        where, check = route.label, ""
    else:
        where, check = f"{route.prefix} ({route.label})", "; `renewauth check` tests the entry"
    logger.error("no token for requests under %s: %s: %s%s", where, *failure, check)


def report_success(route: Route) -> None:
    """A token was used under `route`: the run of failures ends, and the next is logged."""
    if route.state.failure is not None:
        with route.state.lock:
            route.state.failure = None
