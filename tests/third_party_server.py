"""A real, third-party OAuth 2 authorization server for the suite: django-oauth-toolkit.

Run as a script by the `third_party` fixture: it configures Django in code, migrates a
SQLite database in a temporary directory, registers one client per grant, serves the
toolkit's token endpoint (`/o/token/`) and a protected view (`/api/hello`) with Django's
threaded WSGI server on a free loopback port, prints one JSON line (port and credentials)
and serves until it is terminated. None of the OAuth 2 logic is ours.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading

LIFETIME_SECONDS = 4  # a refresh revokes the old access token here: see test_third_party
SECRET = "s3cr+t/with:odd%chars= and a space"


def main() -> None:
    import logging

    import django
    from django.conf import settings

    logging.disable(logging.WARNING)  # Django logs every 403 ("Forbidden: /api/hello")

    directory = tempfile.mkdtemp(prefix="renewauth-dot-")
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test-only-not-secret",
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        USE_TZ=True,
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "oauth2_provider",
        ],
        MIDDLEWARE=[],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": f"{directory}/db.sqlite3",
                "OPTIONS": {"timeout": 30},
            }
        },
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],  # fast, test only
        OAUTH2_PROVIDER={
            "ACCESS_TOKEN_EXPIRE_SECONDS": LIFETIME_SECONDS,
            "ROTATE_REFRESH_TOKEN": True,
            "PKCE_REQUIRED": False,
        },
        LOGGING_CONFIG=None,
    )
    django.setup()

    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from django.contrib.auth.models import User
    from oauth2_provider.models import Application

    user = User.objects.create_user("alice", password="alice-password")
    clients = {}
    for grant in (Application.GRANT_CLIENT_CREDENTIALS, Application.GRANT_PASSWORD):
        client_id = f"{grant}-client"
        Application.objects.create(
            name=grant,
            client_id=client_id,
            client_secret=SECRET,
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=grant,
            user=user,
        )
        clients[grant] = client_id

    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler)
    server.daemon_threads = True
    server.set_app(get_wsgi_application())
    port = server.server_address[1]
    print(
        json.dumps(
            {"port": port, "secret": SECRET, "clients": clients, "lifetime": LIFETIME_SECONDS}
        ),
        flush=True,
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # until the fixture closes our stdin (or terminates us)
    server.shutdown()


# --- the URLconf (ROOT_URLCONF is this module) ------------------------------------------------


def _urlpatterns() -> list[object]:
    from django.http import HttpRequest, JsonResponse
    from django.urls import include, path
    from oauth2_provider.views.generic import ProtectedResourceView

    class Hello(ProtectedResourceView):  # type: ignore[misc]
        def get(self, request: HttpRequest) -> JsonResponse:
            return JsonResponse({"ok": True})

    return [
        path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
        path("api/hello", Hello.as_view()),
    ]


def __getattr__(name: str) -> object:
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)


if __name__ == "__main__":
    main()
