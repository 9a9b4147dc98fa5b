"""`renewauth run` on real SDKs from PyPI: gql, whose transports run on httpx2 (which gql
prefers to httpx when it is installed) and on aiohttp, and gidgethub, a GitHub client on
aiohttp.

gql posts `{"query": …}` and needs `{"data": …}` back, which the fake's API does not answer;
`GraphQLFront` is a GraphQL-shaped API on an origin of its own that asks the fake's API,
with the bearer token it was sent, who the caller is: the fake decides every answer (and
counts it), the front only reshapes it. gidgethub takes the fake's JSON answers as they are.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import pytest

from renewauth.testing import FakeOAuth2Provider

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class GraphQLFront:
    """POST `{"query": …}` → `{"data": {"me": SUBJECT}}` when the fake's API accepts the
    request's `Authorization`, else the fake's status with `{"errors": […]}`."""

    def __init__(self, fake: FakeOAuth2Provider) -> None:
        self.statuses: list[int] = []
        front = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                """No access log on stderr."""

            def do_POST(self) -> None:
                query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, answer = front.answer(query, self.headers.get("Authorization"))
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if status == 401:
                    self.send_header("WWW-Authenticate", "Bearer")
                self.end_headers()
                self.wfile.write(body)

        self.fake = fake
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/graphql"

    def answer(self, query: object, authorization: str | None) -> tuple[int, object]:
        if not isinstance(query, dict) or "query" not in query:
            return 400, {"errors": [{"message": "no query"}]}
        asked = urllib.request.Request(  # noqa: S310 - the fake's own loopback URL
            self.fake.api_url + "graphql",
            headers={} if authorization is None else {"Authorization": authorization},
        )
        try:
            with _NO_PROXY.open(asked, timeout=10) as reply:
                subject = json.load(reply)["subject"]
                status, answer = 200, {"data": {"me": subject}}
        except urllib.error.HTTPError as error:
            status, answer = error.code, {"errors": [{"message": "not authorized"}]}
        self.statuses.append(status)
        return status, answer

    def __enter__(self) -> GraphQLFront:
        self.thread.start()  # the socket listens already: no request can come too early
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


GQL_PROGRAM = """
import asyncio, json, sys, time

from gql import Client, gql

transport, url = sys.argv[1:3]
query = gql("query { me }")
answers = []


def for_a_while(call):
    started = time.monotonic()
    while time.monotonic() - started < 2.5:  # two lifetimes of the 1 s tokens, and more
        answers.append(call())


if transport == "httpx":
    import gql.transport.httpx as chosen

    with Client(transport=chosen.HTTPXTransport(url=url)) as session:
        for_a_while(lambda: session.execute(query))
else:
    if transport == "httpx-async":
        import gql.transport.httpx as chosen

        made = lambda: chosen.HTTPXAsyncTransport(url=url)
    else:
        import gql.transport.aiohttp as chosen

        made = lambda: chosen.AIOHTTPTransport(url=url)

    async def main():
        async with Client(transport=made()) as session:
            started = time.monotonic()
            while time.monotonic() - started < 2.5:
                answers.append(await session.execute(query))

    asyncio.run(main())
library = chosen.httpx.__name__ if transport.startswith("httpx") else chosen.aiohttp.__name__
print(json.dumps({"library": library, "subjects": sorted({a["me"] for a in answers}),
                  "calls": len(answers)}))
"""


def _run(
    tmp_path: pathlib.Path, fake: FakeOAuth2Provider, prefix: str, *command: str
) -> subprocess.CompletedProcess[str]:
    """`renewauth run -- python COMMAND…` with one entry: the password grant at the fake for
    URLs under `prefix`, 1 s tokens renewed 0.2 s before they expire."""
    config = tmp_path / "renewauth.toml"
    config.write_text(
        f"""
[auth.api]
provider = "oauth2-password"
prefixes = ["{prefix}"]
token_url = "{fake.token_url}"
client_id = "client-id"
username = "alice"
password_env = "P"
client_secret_env = "S"
leeway = 0.2
store_path = "{tmp_path}/tokens"
"""
    )
    config.chmod(0o600)
    return subprocess.run(
        [
            *(sys.executable, "-m", "renewauth.cli", "run", "--config", str(config)),
            *("--", sys.executable, *command),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "P": "alice-password", "S": "client-secret"},
    )


@pytest.mark.parametrize(
    ("transport", "library"),
    [("httpx", "httpx2"), ("httpx-async", "httpx2"), ("aiohttp", "aiohttp")],
)
def test_run_gives_gql_live_tokens_through_each_of_its_transports(
    transport: str, library: str, tmp_path: pathlib.Path
) -> None:
    script = tmp_path / "gql_program.py"
    script.write_text(GQL_PROGRAM)
    with (
        FakeOAuth2Provider(token_lifetime=1.0, rotate_refresh_tokens=True) as fake,
        GraphQLFront(fake) as front,
    ):
        result = _run(tmp_path, fake, front.url, str(script), transport, front.url)
        assert result.returncode == 0, result.stderr
        outcome = json.loads(result.stdout)
        assert (outcome["library"], outcome["subjects"]) == (library, ["alice"])
        assert front.statuses == [200] * outcome["calls"]  # every call 200, none rejected
        assert fake.api_unauthorized == 0
        assert fake.token_calls >= 3  # the first token and a renewal per 0.8 s of calls
        assert fake.stale_refresh_tokens == 0
    assert "WARNING" not in result.stderr, result.stderr
    assert "ERROR" not in result.stderr, result.stderr


GIDGETHUB_PROGRAM = """
import asyncio, json, sys, time

import aiohttp
from gidgethub import BadRequest
from gidgethub.aiohttp import GitHubAPI

base = sys.argv[1]


async def main():
    subjects, calls = set(), 0
    async with aiohttp.ClientSession() as session:
        github = GitHubAPI(session, "legacy-report", base_url=base)
        started = time.monotonic()
        while time.monotonic() - started < 2.5:  # two lifetimes of the 1 s tokens, and more
            subjects.add((await github.getitem("/user"))["subject"])
            calls += 1
        posted = await github.post("/repos/owner/repo/issues", data={"title": "renewed"})
        # A personal token pasted into the script: GitHub's own `token` scheme, left alone.
        pasted = GitHubAPI(session, "legacy-report", oauth_token="ghp_pasted", base_url=base)
        try:
            await pasted.getitem("/user")
            rejected = None
        except BadRequest as error:
            rejected = int(error.status_code)
    return {"subjects": sorted(subjects), "calls": calls, "posted": posted["subject"],
            "rejected": rejected}


print(json.dumps(asyncio.run(main())))
"""


def test_run_gives_gidgethub_on_aiohttp_live_tokens_and_leaves_its_own_token_alone(
    tmp_path: pathlib.Path,
) -> None:
    script = tmp_path / "gidgethub_program.py"
    script.write_text(GIDGETHUB_PROGRAM)
    with FakeOAuth2Provider(token_lifetime=1.0, rotate_refresh_tokens=True) as fake:
        base = fake.api_url.rstrip("/")
        result = _run(tmp_path, fake, fake.api_url, str(script), base)
        assert result.returncode == 0, result.stderr
        outcome = json.loads(result.stdout)
        assert (outcome["subjects"], outcome["posted"], outcome["rejected"]) == (
            ["alice"],
            "alice",
            401,
        )
        assert fake.api_unauthorized == 1  # the pasted token's call only
        assert fake.token_calls >= 3
    [warning] = [line for line in result.stderr.splitlines() if " WARNING " in line]
    assert f"{fake.base_url} answered 401 to a request under [auth.api] that renewauth did " in (
        warning
    )
    assert "carries a non-Bearer Authorization (scheme: Token)" in warning
    assert "ghp_pasted" not in result.stderr
