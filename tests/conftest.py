"""Shared fixtures. Real servers (pgstac, SeaweedFS, an OAuth2 token endpoint) are started on
127.0.0.1 by the plugins in tests/fixtures/; missing binaries skip, or fail with
AUX_REQUIRE_SERVERS=1 (CI)."""

from pathlib import Path

import pytest

from aux_assets.sample import ensure_sample

pytest_plugins = [
    "tests.fixtures.pgstac",
    "tests.fixtures.seaweedfs",
    "tests.fixtures.oauth",
]


@pytest.fixture(scope="session")
def shared_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded default sample, generated once per session (read-only for tests)."""
    root = tmp_path_factory.mktemp("shared") / "sample"
    ensure_sample(root)
    return root
