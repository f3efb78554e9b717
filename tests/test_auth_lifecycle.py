"""What credentials and clients cost while they live: a token fetch that leaves the event loop
running, one token per account and process, search sessions closed once done."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import dagster as dg
import pytest

from aux_assets.auth import AuthError, OAuth2Auth, OAuth2Settings, auth_from_env
from aux_assets.defs.resources import build_resources
from aux_assets.sources.base import SearchRequest
from aux_assets.sources.stac_api import StacApiSource
from aux_assets.staging.transfer import TransferEngine, TransferRequest
from tests.fixtures.oauth import RESOURCE_BODY, OAuthServer
from tests.helpers.servers import file_handler, serve, serve_counting, stac_api_handler

TOKEN_DELAY_S = 1.0


def _auth(server: OAuthServer) -> OAuth2Auth:
    settings = OAuth2Settings(
        server.token_url, server.base_url, server.client_id, server.client_secret
    )
    return OAuth2Auth(settings)


def test_a_token_fetch_does_not_stall_the_other_transfers(
    oauth_server: OAuthServer, tmp_path: Path
) -> None:
    """Eight transfers need a token the endpoint takes 1 s to give: one request is made, and a
    transfer without credentials started meanwhile completes long before it is there."""
    oauth_server.delay_s = TOKEN_DELAY_S
    auth = _auth(oauth_server)
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "open.bin").write_bytes(b"x" * 4096)
    authed = [
        TransferRequest(oauth_server.resource_url, tmp_path / f"a{i}.part", auth=auth)
        for i in range(8)
    ]

    async def main(files_url: str) -> tuple[float, float]:
        async with TransferEngine(default_limit=16) as engine:
            started = time.monotonic()
            waiting = [asyncio.create_task(engine.fetch(r)) for r in authed]
            await asyncio.sleep(0.1)  # the token request is in flight
            plain = TransferRequest(f"{files_url}/files/open.bin", tmp_path / "open.part")
            await engine.fetch(plain)
            plain_done = time.monotonic() - started
            await asyncio.gather(*waiting)
            return plain_done, time.monotonic() - started

    with serve(file_handler(tmp_path / "files")) as (files_url, _):
        plain_done, authed_done = asyncio.run(main(files_url))
    assert plain_done < TOKEN_DELAY_S / 2 < TOKEN_DELAY_S <= authed_done
    assert (tmp_path / "open.part").read_bytes() == b"x" * 4096
    assert all(r.part_path.read_bytes() == RESOURCE_BODY for r in authed)
    assert len(oauth_server.requests) == 1 and oauth_server.resource_statuses == [200] * 8


def test_concurrent_first_requests_wait_for_one_token_request(oauth_server: OAuthServer) -> None:
    """Twenty tasks and a thread ask at once; one task is cancelled while it waits, which cancels
    nobody else's wait."""
    oauth_server.delay_s = 0.3
    auth = _auth(oauth_server)
    url = oauth_server.resource_url

    async def main() -> list[dict[str, str]]:
        tasks = [asyncio.create_task(auth.aheaders_for(url)) for _ in range(20)]
        await asyncio.sleep(0.05)
        tasks[0].cancel()
        blocking = asyncio.to_thread(auth.headers_for, url)  # a search thread meanwhile
        return [*await asyncio.gather(*tasks[1:]), await blocking]

    headers = asyncio.run(main())
    assert len(headers) == 20 and len({h["Authorization"] for h in headers}) == 1
    assert oauth_server.is_valid(headers[0]["Authorization"].removeprefix("Bearer "))
    assert len(oauth_server.requests) == 1 and auth.token_requests == 1


def _oauth_env(prefix: str, server: OAuthServer, **extra: str) -> dict[str, str]:
    values = {
        "TOKEN_URL": server.token_url,
        "CLIENT_ID": server.client_id,
        "CLIENT_SECRET": str(server.client_secret),
        **extra,
    }
    return {f"{prefix}_{name}": value for name, value in values.items()}


def test_one_token_per_account_whatever_the_origins(oauth_server: OAuthServer) -> None:
    """Two sources on other hosts with the same account share its token; another scope, or
    another secret, is another login."""
    env = {**_oauth_env("AUX_AUXIP", oauth_server), **_oauth_env("AUX_PRIP", oauth_server)}
    auxip = auth_from_env("AUX_AUXIP", env, "https://auxip.example/stac")
    prip = auth_from_env("AUX_PRIP", env, "https://prip.example/stac")
    assert auxip is not None and prip is not None
    assert auxip.headers_for("https://auxip.example/search") == prip.headers_for(
        "https://prip.example/search"
    )
    assert prip.headers_for("https://auxip.example/search") == {}  # each its own origin
    assert len(oauth_server.requests) == 1

    scoped = auth_from_env(
        "AUX_CDSE", _oauth_env("AUX_CDSE", oauth_server, SCOPE="openid"), "https://c.example"
    )
    wrong = _oauth_env("AUX_CDSE", oauth_server, CLIENT_SECRET="not-the-secret")
    other_secret = auth_from_env("AUX_CDSE", wrong, "https://c.example")
    assert scoped is not None and other_secret is not None
    assert "Authorization" in scoped.headers_for("https://c.example/x")
    with pytest.raises(AuthError, match="invalid_client"):
        other_secret.headers_for("https://c.example/x")
    assert len(oauth_server.requests) == 3


def test_the_catalog_and_its_source_share_one_token(
    oauth_server: OAuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``AUX_CATALOG_*`` configures both the catalog and the source ``catalog``: one login."""
    with serve_counting(stac_api_handler([])) as (url, log, _):
        env = {
            "AUX_ASSETS_HOME": str(tmp_path),
            "AUX_CATALOG_URL": url,
            **_oauth_env("AUX_CATALOG", oauth_server),
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)  # the secrets are EnvVars, read when resources start
        defined = build_resources(env)
        with dg.build_resources({k: defined[k] for k in ("catalog", "catalog_source")}) as started:
            catalog = started.catalog.open()
            try:
                assert catalog.get_items("aux", ["an-item"]) == {}
            finally:
                catalog.close()
            assert started.catalog_source.open().search(SearchRequest(limit=1)) == []
    sent = {{k.lower(): v for k, v in hit["headers"].items()}["authorization"] for hit in log}
    assert len(log) >= 3 and len(sent) == 1
    assert oauth_server.is_valid(sent.pop().removeprefix("Bearer "))
    assert len(oauth_server.requests) == 1


def test_search_sessions_are_closed_when_the_source_is_done(tmp_path: Path) -> None:
    """The resource closes its source's session at teardown (the server sees the connections
    end); a closed source searches again on new connections."""
    with serve_counting(stac_api_handler([])) as (url, _, server):
        defined = build_resources({"AUX_ASSETS_HOME": str(tmp_path), "AUX_PRIP_URL": url})
        with dg.build_resources({"prip": defined["prip"]}) as started:
            source = started.prip.open()
            assert isinstance(source, StacApiSource)
            source.search(SearchRequest(limit=1))
            assert server.open_connections == 1  # kept alive for the next search
        assert server.wait_closed()

        source.search(SearchRequest(limit=1))
        assert server.open_connections == 1
        source.close()
        assert server.wait_closed()
