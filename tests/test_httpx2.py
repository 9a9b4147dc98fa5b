"""httpx2, the fork of httpx: the same auth object is an `httpx2.Auth`, whenever it is imported.

httpx2's clients take only their own `Auth` and wrap any other callable as a function of the
request, which would sign once and never renew. What each client must do with the object
(renewal, 401 and resend, bodies, redirects, saturated pools) is tested for every client in
test_renewal.py, test_origins.py and test_arrival.py; here is what only the fork needs: the
object becomes an `httpx2.Auth` whichever module the program imports first, renewauth imports
neither optional client itself, and a copy of the object is one too.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import httpx2
import pytest

from renewauth import ConfigurationError, MemoryStore, OAuth2ClientCredentials
from renewauth.testing import FakeOAuth2Provider
from renewauth.transports._signing import QUEUED_AT_MOST

from .helpers import ManualClock


def _run(code: str) -> str:
    """`code` in a fresh interpreter (its own imports, nothing of this process's); its output."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_renewauth_imports_neither_optional_client() -> None:
    assert (
        _run(
            """
        import sys
        import renewauth
        print(sorted(name for name in ("httpx2", "aiohttp") if name in sys.modules))
        """
        )
        == "[]"
    )


@pytest.mark.parametrize("first", ["renewauth", "httpx2"])
def test_the_object_is_an_httpx2_auth_whichever_module_is_imported_first(first: str) -> None:
    """Built before httpx2 is imported (a post-import hook) or after: the client keeps the
    object itself as its auth, not a function wrapper, and its flows sign and renew."""
    with FakeOAuth2Provider(token_lifetime=100.0) as fake:
        second = "httpx2" if first == "renewauth" else "renewauth"
        output = _run(
            f"""
            import {first}
            import renewauth
            auth = renewauth.OAuth2ClientCredentials(
                {fake.token_url!r}, "client-id", "client-secret", store=renewauth.MemoryStore()
            )
            import {second}
            import httpx2
            with httpx2.Client(auth=auth) as client:
                first = client.get({fake.api_url!r}).status_code
                kept = client.auth is auth
            print(isinstance(auth, httpx2.Auth), kept, first)
            """
        )
        assert output == "True True 200"
        assert fake.token_calls == 1


def test_a_pickled_copy_is_an_httpx2_auth_in_a_process_that_imports_httpx2_later() -> None:
    with FakeOAuth2Provider(token_lifetime=100.0) as fake:
        auth = OAuth2ClientCredentials(
            fake.token_url, "client-id", "client-secret", store=MemoryStore()
        )
        with httpx2.Client(auth=auth) as client:
            assert client.get(fake.api_url).status_code == 200
        pickled = pickle.dumps(auth)
        output = _run(
            f"""
            import pickle
            auth = pickle.loads({pickled!r})
            import httpx2
            with httpx2.Client(auth=auth) as client:
                print(isinstance(auth, httpx2.Auth), client.get({fake.api_url!r}).status_code)
            """
        )
        assert output == "True 200"


def test_an_object_called_as_a_function_of_a_request_it_cannot_sign_says_where_it_goes() -> None:
    """A client that wraps the object as a function (a fork renewauth does not know) gets a
    typed error naming where each library takes it, not an AttributeError from inside."""
    auth = OAuth2ClientCredentials(
        "https://idp.example/token", "client-id", "client-secret", store=MemoryStore()
    )
    with pytest.raises(ConfigurationError, match=r"middlewares=\(auth,\)") as caught:
        auth(httpx2.Request("GET", "https://api.example/"))
    assert "httpx2.Request" in str(caught.value)
    assert "client-secret" not in str(caught.value)


def test_a_non_replayable_httpx2_body_is_told_apart_from_a_replayable_one() -> None:
    """httpx2's own `ByteStream` is a body renewauth may send again; its streams are not."""
    with FakeOAuth2Provider(token_lifetime=100.0) as fake:
        auth = OAuth2ClientCredentials(
            fake.token_url, "client-id", "client-secret", store=MemoryStore()
        )
        auth.get_token()
        with httpx2.Client(auth=auth) as client:
            fake.revoke_access_tokens()
            assert client.post(fake.api_url + "upload", content=b"x" * 10).status_code == 200
            fake.revoke_access_tokens()
            streamed = client.post(fake.api_url + "upload", content=iter([b"x", b"y"]))
        assert streamed.status_code == 401
        assert fake.api_unauthorized == 2  # each revocation answered once; one resend
        assert fake.token_calls == 2


def test_a_request_is_watched_as_it_leaves_only_while_its_token_may_age_in_the_queue() -> None:
    """httpcore2 calls a trace for every event of every request, which costs 4 % of a cached
    token's request: a token far from its renewal leaves unwatched. One due within
    `QUEUED_AT_MOST` is watched, and replaced if it expired while its request queued."""
    clock = ManualClock()
    with FakeOAuth2Provider(token_lifetime=100.0, clock=clock) as fake:
        auth = OAuth2ClientCredentials(
            fake.token_url, "client-id", "client-secret", store=MemoryStore(), clock=clock
        )
        watched: list[bool] = []
        queue_for = [0.0]

        def leave(request: httpx2.Request) -> None:  # between the signing and the headers
            watched.append(request.extensions.get("trace") is not None)
            clock.advance(queue_for[0])

        with httpx2.Client(auth=auth, event_hooks={"request": [leave]}) as client:
            assert client.get(fake.api_url).status_code == 200  # 100 s left: unwatched
            clock.advance(100.0 - 30.0 - QUEUED_AT_MOST + 1.0)  # due within QUEUED_AT_MOST
            queue_for[0] = 60.0  # queues past its expiry
            answer = client.get(fake.api_url)
        assert watched == [False, True]
        assert answer.status_code == 200
        assert answer.history == []  # replaced as it left: no 401, no resend
        assert fake.api_unauthorized == 0
        assert fake.token_calls == 2
