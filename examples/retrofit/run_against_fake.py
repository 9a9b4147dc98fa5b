"""Run the legacy script under `renewauth run`, against the embedded fake provider.

python examples/retrofit/run_against_fake.py
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile

from renewauth.testing import FakeOAuth2Provider

HERE = pathlib.Path(__file__).parent


def main() -> None:
    with FakeOAuth2Provider(token_lifetime=60) as fake, tempfile.TemporaryDirectory() as work:
        config = pathlib.Path(work) / "renewauth.toml"
        config.write_text(
            f"""
[auth.orders]
provider = "oauth2-client-credentials"
prefixes = ["{fake.api_url}"]
token_url = "{fake.token_url}"
client_id = "client-id"
client_secret_env = "ORDERS_CLIENT_SECRET"
store = "file"
store_path = "{work}/tokens"
"""
        )
        environment = {**os.environ, "ORDERS_CLIENT_SECRET": "client-secret"}
        command = [
            sys.executable,
            "-m",
            "renewauth.cli",
            "run",
            "--explain",  # why each call was signed or left alone, once per reason
            "--config",
            str(config),
            "--",
            sys.executable,
            str(HERE / "legacy_script.py"),
            fake.api_url + "orders",
        ]
        result = subprocess.run(command, env=environment, check=False)
        print(f"exit status {result.returncode}; token calls: {fake.token_calls}")
        sys.exit(result.returncode)


if __name__ == "__main__":
    main()
