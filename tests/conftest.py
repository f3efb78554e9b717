"""Shared fixtures. Real servers (pgstac, SeaweedFS, an OAuth2 token endpoint) are started on
127.0.0.1 by the plugins in tests/fixtures/; missing binaries skip, or fail with
AUX_REQUIRE_SERVERS=1 (CI)."""

import signal
from pathlib import Path
from types import FrameType

import pytest

from aux_assets.sample import generate_sample


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
    """A static sample of the week 2026-01-01..07, generated once per session (read-only for
    tests): what static and remote test sources serve."""
    root = tmp_path_factory.mktemp("shared") / "sample"
    generate_sample(root)
    return root


@pytest.fixture(scope="session")
def shared_living(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache of the embedded default's living sample shared by the tests of a session: link
    it as ``$AUX_ASSETS_HOME/auxip-sample`` (files are written on first use, atomically)."""
    root = tmp_path_factory.mktemp("shared") / "auxip-sample"
    root.mkdir()
    return root


@pytest.fixture(autouse=True)
def _fresh_oauth2_accounts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without the OAuth2 tokens of earlier ones (shared per account and
    process by ``aux_assets.auth``)."""
    monkeypatch.setattr("aux_assets.auth._accounts", {})


@pytest.fixture
def home(tmp_path: Path, shared_living: Path) -> Path:
    """An empty ``AUX_ASSETS_HOME`` whose embedded sample is the session's shared cache."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "auxip-sample").symlink_to(shared_living, target_is_directory=True)
    return home
