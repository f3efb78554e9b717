"""Shared fixtures. Real servers (pgstac, SeaweedFS, an OAuth2 token endpoint) are started on
127.0.0.1 by the plugins in tests/fixtures/; missing binaries skip, or fail with
AUX_REQUIRE_SERVERS=1 (CI)."""

import signal
from pathlib import Path
from types import FrameType

import pytest

from aux_assets.sample import ensure_sample


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# A SIGTERM (e.g. a CI timeout) interrupts pytest like Ctrl-C, so that the session fixtures
# still stop the servers they started.
signal.signal(signal.SIGTERM, _interrupt)

pytest_plugins = [
    "tests.fixtures.pgstac",
    "tests.fixtures.seaweedfs",
    "tests.fixtures.oauth",
    "tests.fixtures.rs_server",
    "tests.fixtures.rs_catalog",
]


@pytest.fixture(scope="session")
def shared_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded default sample, generated once per session (read-only for tests)."""
    root = tmp_path_factory.mktemp("shared") / "sample"
    ensure_sample(root)
    return root


@pytest.fixture(autouse=True)
def _fresh_oauth2_accounts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without the OAuth2 tokens of earlier ones (shared per account and
    process by ``aux_assets.auth``)."""
    monkeypatch.setattr("aux_assets.auth._accounts", {})
