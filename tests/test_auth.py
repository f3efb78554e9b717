"""OAuth2 tokens against a real token endpoint on 127.0.0.1 (``tests/fixtures/oauth.py``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from aux_assets.auth import (
    FAILURE_HOLD_S,
    AnyOfAuth,
    AuthError,
    OAuth2Auth,
    OAuth2Settings,
    StaticAuth,
    Unauthorized,
    auth_from_env,
    renewing,
    renewing_blocking,
)
from aux_assets.sources.profiles import profile
from aux_assets.staging.transfer import TransferEngine, TransferRequest
from tests.fixtures.oauth import RESOURCE_BODY, GrantRequest, OAuthServer
from tests.helpers.station import (
    BASIC,
    Product,
    account,
    serve_station,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings(server: OAuthServer, *, user: bool = False, **overrides: object) -> OAuth2Settings:
    fields: dict[str, object] = {
        "token_url": server.token_url,
        "origin": server.base_url,
        "client_id": server.client_id,
        "client_secret": server.client_secret,
    }
    if user:
        fields |= {"username": server.username, "password": server.password}
    return OAuth2Settings(**(fields | overrides))  # type: ignore[arg-type]


def bearer(auth: OAuth2Auth, server: OAuthServer) -> str:
    header = auth.headers_for(server.resource_url)["Authorization"]
    assert header.startswith("Bearer ")
    return header.removeprefix("Bearer ")


def grants(server: OAuthServer) -> list[str | None]:
    return [r.grant_type for r in server.requests]


def test_client_credentials_grant(oauth_server: OAuthServer) -> None:
    auth = OAuth2Auth(settings(oauth_server, scope="openid"))
    token = bearer(auth, oauth_server)
    assert oauth_server.requests == [
        GrantRequest("client_credentials", "aux-assets", secret_matched=True, scope="openid")
    ]
    assert oauth_server.is_valid(token)
    response = httpx.get(
        oauth_server.resource_url, headers=auth.headers_for(oauth_server.resource_url)
    )
    assert response.content == RESOURCE_BODY
    assert oauth_server.resource_statuses == [200]


@pytest.mark.parametrize("public", [False, True], ids=["confidential", "public-client"])
def test_password_grant(oauth_server: OAuthServer, public: bool) -> None:
    if public:  # like CDSE's cdse-public client: no secret
        oauth_server.client_secret = None
    auth = OAuth2Auth(settings(oauth_server, user=True))
    assert auth.settings.grant_type == "password"
    assert oauth_server.is_valid(bearer(auth, oauth_server))
    [request] = oauth_server.requests
    assert (request.grant_type, request.client_id, request.username) == (
        "password",
        "aux-assets",
        "alice",
    )
    assert request.secret_matched is not public


def test_token_is_reused_across_calls_and_threads(oauth_server: OAuthServer) -> None:
    auth = OAuth2Auth(settings(oauth_server))
    assert len({bearer(auth, oauth_server) for _ in range(50)}) == 1
    assert auth.token_requests == 1

    oauth_server.delay_s = 0.2  # the first fetch is still running when the others arrive
    shared = OAuth2Auth(settings(oauth_server))
    barrier = threading.Barrier(8)
    seen: list[str] = []

    def call() -> None:
        barrier.wait()
        seen.append(bearer(shared, oauth_server))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8 and len(set(seen)) == 1
    assert shared.token_requests == 1 and len(oauth_server.requests) == 2


def test_token_is_renewed_before_expiry(oauth_server: OAuthServer) -> None:
    oauth_server.expires_in = 120
    clock = FakeClock()
    auth = OAuth2Auth(settings(oauth_server), refresh_margin_s=60, clock=clock)
    first = bearer(auth, oauth_server)
    clock.now += 59
    assert bearer(auth, oauth_server) == first
    clock.now += 2
    second = bearer(auth, oauth_server)
    assert second != first and oauth_server.is_valid(second)
    assert grants(oauth_server) == ["client_credentials", "client_credentials"]


def test_short_lived_token_is_renewed_at_half_life(oauth_server: OAuthServer) -> None:
    oauth_server.expires_in = 30  # shorter than the margin: do not fetch on every call
    clock = FakeClock()
    auth = OAuth2Auth(settings(oauth_server), refresh_margin_s=60, clock=clock)
    first = bearer(auth, oauth_server)
    clock.now += 14
    assert bearer(auth, oauth_server) == first
    clock.now += 2
    assert bearer(auth, oauth_server) != first
    assert auth.token_requests == 2


def test_missing_expires_in_defaults_to_300_s(oauth_server: OAuthServer) -> None:
    oauth_server.expires_in = None
    clock = FakeClock()
    auth = OAuth2Auth(settings(oauth_server), refresh_margin_s=60, clock=clock)
    first = bearer(auth, oauth_server)
    clock.now += 239
    assert bearer(auth, oauth_server) == first
    clock.now += 2
    assert bearer(auth, oauth_server) != first


def test_refresh_token_grant_while_valid_else_original_grant(oauth_server: OAuthServer) -> None:
    oauth_server.expires_in, oauth_server.refresh_expires_in = 120, 200
    clock = FakeClock()
    auth = OAuth2Auth(settings(oauth_server, user=True), refresh_margin_s=60, clock=clock)
    bearer(auth, oauth_server)
    clock.now += 61
    renewed = bearer(auth, oauth_server)
    assert grants(oauth_server) == ["password", "refresh_token"]
    assert oauth_server.requests[1].refresh_token and oauth_server.requests[1].secret_matched
    assert oauth_server.is_valid(renewed)
    clock.now += 250  # the refresh token issued at +61 s expired at +261 s
    bearer(auth, oauth_server)
    assert grants(oauth_server) == ["password", "refresh_token", "password"]


def test_rejected_refresh_token_falls_back_to_original_grant(oauth_server: OAuthServer) -> None:
    auth = OAuth2Auth(settings(oauth_server, user=True))
    first = bearer(auth, oauth_server)
    oauth_server.revoke_all(refresh_tokens=True)  # e.g. the session was ended server-side
    assert asyncio.run(auth.refresh()) is True
    assert grants(oauth_server) == ["password", "refresh_token", "password"]
    assert bearer(auth, oauth_server) != first


def test_concurrent_refreshes_after_401_make_one_token_request(oauth_server: OAuthServer) -> None:
    oauth_server.delay_s = 0.05
    auth = OAuth2Auth(settings(oauth_server))
    stale = bearer(auth, oauth_server)
    oauth_server.revoke_all()
    first_done = asyncio.Event()

    async def transfer(late: bool) -> tuple[bool, str]:
        assert bearer(auth, oauth_server) == stale  # the request that will get the 401
        await asyncio.sleep(0)
        if late:  # its 401 arrives after another transfer already renewed the token
            await first_done.wait()
        renewed = await auth.refresh()
        first_done.set()
        return renewed, bearer(auth, oauth_server)

    async def main() -> list[tuple[bool, str]]:
        return await asyncio.gather(*(transfer(late=i >= 15) for i in range(20)))

    results = asyncio.run(main())
    assert {renewed for renewed, _ in results} == {True}
    [new] = {token for _, token in results}
    assert new != stale and oauth_server.is_valid(new)
    assert auth.token_requests == 2 and len(oauth_server.requests) == 2


def test_a_401_on_the_new_token_or_without_context_renews_again(oauth_server: OAuthServer) -> None:
    auth = OAuth2Auth(settings(oauth_server))

    async def after_401() -> bool:
        bearer(auth, oauth_server)
        return await auth.refresh()

    assert asyncio.run(after_401()) and auth.token_requests == 2
    assert asyncio.run(after_401()) and auth.token_requests == 3
    assert asyncio.run(auth.refresh()) and auth.token_requests == 4  # no headers_for seen: renew


def test_other_origins_get_no_token_and_cause_no_fetch(oauth_server: OAuthServer) -> None:
    port = oauth_server.server_address[1]
    auth = OAuth2Auth(settings(oauth_server, extra_origins=("https://download.example",)))
    for url in (
        "https://elsewhere.example/x",
        f"http://localhost:{port}/resource",
        f"https://127.0.0.1:{port}/resource",
        f"http://127.0.0.1:{port + 1}/resource",
    ):
        assert auth.headers_for(url) == {}
    assert oauth_server.requests == [] and auth.token_requests == 0

    async def after_foreign_401() -> bool:  # a 401 where no token was sent: renewing cannot help
        auth.headers_for("https://elsewhere.example/x")
        return await auth.refresh()

    assert asyncio.run(after_foreign_401()) is False and auth.token_requests == 0
    assert "Authorization" in auth.headers_for("https://DOWNLOAD.example:443/file")
    assert auth.token_requests == 1


def test_transfer_engine_renews_a_revoked_token_once(
    oauth_server: OAuthServer, tmp_path: Path
) -> None:
    auth = OAuth2Auth(settings(oauth_server, user=True))
    bearer(auth, oauth_server)
    oauth_server.revoke_all()
    requests = [
        TransferRequest(oauth_server.resource_url, tmp_path / f"f{i}.part", auth=auth)
        for i in range(10)
    ]

    async def main() -> list[object]:
        async with TransferEngine(default_limit=10) as engine:
            return list(await engine.fetch_all(requests))

    results = asyncio.run(main())
    for request, result in zip(requests, results, strict=True):
        assert not isinstance(result, Exception), result
        assert request.part_path.read_bytes() == RESOURCE_BODY
    assert grants(oauth_server) == ["password", "refresh_token"]
    assert oauth_server.resource_statuses.count(200) == 10
    assert 1 <= oauth_server.resource_statuses.count(401) <= 10


def _assert_clean(message: str, server: OAuthServer) -> None:
    for secret in (server.client_secret, server.password, *server.issued_tokens):
        assert secret and secret not in message


def test_token_endpoint_errors_name_endpoint_and_error_not_secrets(
    oauth_server: OAuthServer,
) -> None:
    auth = OAuth2Auth(settings(oauth_server, user=True))
    bearer(auth, oauth_server)
    oauth_server.fail_next(2, description=f"bad client secret {oauth_server.client_secret}")
    with pytest.raises(AuthError) as error:
        asyncio.run(auth.refresh())  # the refresh token grant fails, then the password grant
    message = str(error.value)
    assert f"token endpoint {oauth_server.token_url} failed" in message
    assert "password grant" in message and "HTTP 401" in message and "invalid_client" in message
    assert "bad client secret ***" in message
    _assert_clean(message, oauth_server)


def test_wrong_password_and_broken_endpoints_are_auth_errors(oauth_server: OAuthServer) -> None:
    wrong = OAuth2Auth(settings(oauth_server, user=True, password="nope-not-it"))
    with pytest.raises(AuthError, match=r"HTTP 400 Bad Request: invalid_grant \(Invalid user"):
        wrong.headers_for(oauth_server.resource_url)

    clock = FakeClock()
    url = f"{oauth_server.token_url}?key=qs-s3cr3t"
    hidden = OAuth2Auth(settings(oauth_server, token_url=url), clock=clock)
    oauth_server.fail_next(1, status=500, error=None)
    with pytest.raises(AuthError, match=r"HTTP 500 Internal Server Error$") as error:
        hidden.headers_for(oauth_server.resource_url)
    assert "qs-s3cr3t" not in str(error.value) and "/token failed" in str(error.value)

    clock.now += FAILURE_HOLD_S
    oauth_server.fail_next(1, status=200, error=None)
    with pytest.raises(AuthError, match="not a JSON object"):
        hidden.headers_for(oauth_server.resource_url)

    port = oauth_server.server_address[1]
    oauth_server.stop()
    gone = OAuth2Auth(settings(oauth_server), timeout_s=2)
    with pytest.raises(AuthError, match=rf"127\.0\.0\.1:{port}/token failed: ConnectError"):
        gone.headers_for(oauth_server.resource_url)


def test_failed_login_is_not_repeated_by_every_caller(oauth_server: OAuthServer) -> None:
    clock = FakeClock()
    auth = OAuth2Auth(settings(oauth_server, user=True, password="nope-not-it"), clock=clock)
    for _ in range(5):  # e.g. five transfers starting with a wrong password
        with pytest.raises(AuthError, match="invalid_grant"):
            auth.headers_for(oauth_server.resource_url)
    assert auth.token_requests == 1
    clock.now += FAILURE_HOLD_S
    with pytest.raises(AuthError, match="invalid_grant"):
        auth.headers_for(oauth_server.resource_url)
    assert auth.token_requests == 2


def test_repr_hides_secrets(oauth_server: OAuthServer) -> None:
    auth = OAuth2Auth(settings(oauth_server, user=True))
    bearer(auth, oauth_server)
    for text in (repr(auth.settings), repr(auth), str(auth)):
        assert "aux-assets" in text and oauth_server.base_url in text
        _assert_clean(text, oauth_server)


ENV_URL = "https://auxip.example:8443/stac"


def env(**values: str) -> dict[str, str]:
    return {f"AUX_AUXIP_{k}": v for k, v in values.items()}


def test_auth_from_env_branches() -> None:
    auth = auth_from_env(
        "AUX_AUXIP",
        env(TOKEN_URL="https://id.example/token", CLIENT_ID="c", CLIENT_SECRET="s", SCOPE="openid"),
        ENV_URL,
    )
    assert isinstance(auth, OAuth2Auth)
    assert auth.settings == OAuth2Settings(
        "https://id.example/token", "https://auxip.example:8443", "c", "s", scope="openid"
    )
    assert auth.settings.grant_type == "client_credentials"

    auth = auth_from_env(
        "AUX_AUXIP",
        env(TOKEN_URL="https://id.example/token", CLIENT_ID="c", USERNAME="u", PASSWORD="p"),
        ENV_URL,
    )
    assert isinstance(auth, OAuth2Auth) and auth.settings.grant_type == "password"
    assert (auth.settings.username, auth.settings.password, auth.settings.client_secret) == (
        "u",
        "p",
        None,
    )

    static = auth_from_env("AUX_AUXIP", env(TOKEN="t", API_KEY="k"), ENV_URL)
    assert static == StaticAuth("https://auxip.example:8443", api_key="k", token="t")
    assert auth_from_env("AUX_AUXIP", env(API_KEY="k"), ENV_URL) == StaticAuth(
        "https://auxip.example:8443", api_key="k"
    )
    assert auth_from_env("AUX_AUXIP", {"AUX_CDSE_TOKEN": "t"}, ENV_URL) is None
    assert auth_from_env("AUX_AUXIP", env(TOKEN="", TOKEN_URL=""), None) is None


@pytest.mark.parametrize(
    ("values", "url", "variable"),
    [
        ({"TOKEN_URL": "https://id.example/token"}, ENV_URL, "AUX_AUXIP_CLIENT_ID"),
        ({"CLIENT_ID": "c", "CLIENT_SECRET": "s3cr3t"}, ENV_URL, "AUX_AUXIP_TOKEN_URL"),
        (
            {"TOKEN_URL": "https://id.example/t", "CLIENT_ID": "c", "USERNAME": "u"},
            ENV_URL,
            "AUX_AUXIP_PASSWORD",
        ),
        (
            {"TOKEN_URL": "https://id.example/t", "CLIENT_ID": "c", "PASSWORD": "s3cr3t"},
            ENV_URL,
            "AUX_AUXIP_USERNAME",
        ),
        ({"TOKEN_URL": "https://id.example/t", "CLIENT_ID": "c"}, None, "AUX_AUXIP_URL"),
        ({"TOKEN": "s3cr3t"}, None, "AUX_AUXIP_URL"),
        ({"TOKEN_URL": "ftp://id.example/t", "CLIENT_ID": "c"}, ENV_URL, "AUX_AUXIP_TOKEN_URL"),
        (
            {"TOKEN_URL": "https://id.example/t", "CLIENT_ID": "c", "API_KEY": "s3cr3t"},
            ENV_URL,
            "AUX_AUXIP_API_KEY",
        ),
    ],
)
def test_auth_from_env_errors_name_the_variable(
    values: dict[str, str], url: str | None, variable: str
) -> None:
    with pytest.raises(ValueError, match=variable) as error:
        auth_from_env("AUX_AUXIP", env(**values), url)
    assert "s3cr3t" not in str(error.value)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: OAuth2Settings("file:///token", "https://a.example", "c"), "http"),
        (lambda: OAuth2Settings("https://id.example/t", "https://a.example", ""), "client_id"),
        (
            lambda: OAuth2Settings("https://id.example/t", "https://a.example", "c", username="u"),
            "set password",
        ),
    ],
)
def test_settings_validation(make: Callable[[], OAuth2Settings], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_auth_origins_extend_where_the_oauth2_token_goes() -> None:
    env = {
        "AUX_CDSE_TOKEN_URL": "https://identity.example/token",
        "AUX_CDSE_CLIENT_ID": "cdse-public",
        "AUX_CDSE_USERNAME": "u",
        "AUX_CDSE_PASSWORD": "p",
    }
    root, origins = "https://stac.dataspace.copernicus.eu/v1/", profile("cdse").auth_origins
    cdse = auth_from_env("AUX_CDSE", env, root, origins)
    assert isinstance(cdse, OAuth2Auth)
    assert "https://download.dataspace.copernicus.eu" in cdse.settings.extra_origins
    custom = {f"AUX_PRIP{k.removeprefix('AUX_CDSE')}": v for k, v in env.items()}
    custom["AUX_PRIP_AUTH_ORIGINS"] = "https://dl.example:8443, https://other.example"
    prip = auth_from_env("AUX_PRIP", custom, "https://prip.example/stac")
    assert isinstance(prip, OAuth2Auth)
    assert prip.settings.extra_origins == ("https://dl.example:8443", "https://other.example")
    custom["AUX_PRIP_AUTH_ORIGINS"] = "ftp://x"
    with pytest.raises(ValueError, match="AUX_PRIP_AUTH_ORIGINS"):
        auth_from_env("AUX_PRIP", custom, "https://prip.example/stac")


# renewing / renewing_blocking: the one rule for a 401

FAKE_SECRET = "hunter2-client-secret"


class FakeAuth:
    """An Auth whose refresh answers ``renewed`` or raises ``error``, counting the calls."""

    def __init__(self, renewed: bool = True, error: Exception | None = None) -> None:
        self.renewed = renewed
        self.error = error
        self.refreshes = 0

    def headers_for(self, url: str) -> dict[str, str]:
        return {"Authorization": "Bearer fake"}

    async def refresh(self) -> bool:
        self.refreshes += 1
        if self.error is not None:
            raise self.error
        return self.renewed


class Sender:
    """A send that answers 401 (``Unauthorized``) the first ``rejections`` times, then "ok"."""

    def __init__(self, rejections: int) -> None:
        self.rejections = rejections
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.rejections:
            raise Unauthorized(f"HTTP 401 Unauthorized (attempt {self.calls})")
        return "ok"

    async def send(self) -> str:
        return self()


def run_renewing(sender: Sender, auth: FakeAuth | None, blocking: bool) -> str:
    if blocking:
        return renewing_blocking(sender, auth)
    return asyncio.run(renewing(sender.send, auth))


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "blocking"])
def test_a_request_without_401_is_sent_once_and_nothing_is_renewed(blocking: bool) -> None:
    sender, auth = Sender(0), FakeAuth()
    assert run_renewing(sender, auth, blocking) == "ok"
    assert sender.calls == 1 and auth.refreshes == 0


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "blocking"])
def test_a_401_renews_once_and_sends_again(blocking: bool) -> None:
    sender, auth = Sender(1), FakeAuth()
    assert run_renewing(sender, auth, blocking) == "ok"
    assert sender.calls == 2 and auth.refreshes == 1


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "blocking"])
def test_a_second_401_is_raised(blocking: bool) -> None:
    sender, auth = Sender(2), FakeAuth()
    with pytest.raises(Unauthorized, match="attempt 2"):
        run_renewing(sender, auth, blocking)
    assert sender.calls == 2 and auth.refreshes == 1


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "blocking"])
@pytest.mark.parametrize("has_auth", [False, True], ids=["no-auth", "not-renewed"])
def test_a_401_with_nothing_to_renew_is_raised_after_one_send(
    blocking: bool, has_auth: bool
) -> None:
    sender, auth = Sender(1), FakeAuth(renewed=False) if has_auth else None
    with pytest.raises(Unauthorized, match="attempt 1"):
        run_renewing(sender, auth, blocking)
    assert sender.calls == 1
    assert auth is None or auth.refreshes == 1


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "blocking"])
def test_a_failed_renewal_raises_its_auth_error(blocking: bool) -> None:
    error = AuthError("token endpoint said no")
    sender, auth = Sender(1), FakeAuth(error=error)
    with pytest.raises(AuthError) as raised:
        run_renewing(sender, auth, blocking)
    assert raised.value is error
    assert sender.calls == 1 and auth.refreshes == 1


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "blocking"])
def test_a_renewal_crash_becomes_an_auth_error_naming_only_its_type(blocking: bool) -> None:
    sender = Sender(1)
    auth = FakeAuth(error=KeyError(f"bad response with client_secret={FAKE_SECRET}"))
    with pytest.raises(AuthError) as raised:
        run_renewing(sender, auth, blocking)
    message = str(raised.value)
    assert "KeyError" in message and FAKE_SECRET not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert sender.calls == 1 and auth.refreshes == 1


def test_a_blocking_send_renews_even_where_an_event_loop_runs() -> None:
    """A search from a notebook or an async test (this thread runs a loop): the renewal runs in
    a worker thread instead of failing with 'asyncio.run() cannot be called'."""
    sender, auth = Sender(1), FakeAuth()

    async def from_a_running_loop() -> str:
        return renewing_blocking(sender, auth)

    assert asyncio.run(from_a_running_loop()) == "ok"
    assert sender.calls == 2 and auth.refreshes == 1


def test_a_token_request_can_carry_its_own_authorization_header() -> None:
    """rs-server's stations want 'Authorization: Basic ...' on the token request itself."""
    when = datetime(2026, 1, 5, tzinfo=UTC)
    product = Product("S1A_AUX_TEST", "AUX_TEST", when, when, when, when)
    with serve_station([product]) as station:
        without = OAuth2Auth(account(station.url, token_authorization=None))
        with pytest.raises(AuthError, match="invalid_grant"):
            without.headers_for(f"{station.url}/Products")
        auth = OAuth2Auth(account(station.url))
        headers = auth.headers_for(f"{station.url}/Products({product.id})/$value")
        answer = httpx.get(f"{station.url}/Products({product.id})/$value", headers=headers)
        assert answer.status_code == 200 and answer.content == product.data
        assert BASIC not in repr(auth) and "token_authorization='***'" in repr(auth)


def test_any_of_auth_gives_each_origin_its_own_credentials() -> None:
    api = StaticAuth("https://rs.example", api_key="api-key")
    station = StaticAuth("http://station.example:5000", token="station-token")
    auth = AnyOfAuth(api, station)
    assert auth.headers_for("https://rs.example/auxip/search") == {"x-api-key": "api-key"}
    assert auth.headers_for("http://station.example:5000/Products(1)/$value") == {
        "Authorization": "Bearer station-token"
    }
    assert auth.headers_for("https://elsewhere.example/x") == {}
    assert asyncio.run(auth.refresh()) is False  # static credentials cannot be renewed
    assert "api-key" not in repr(auth) and "station-token" not in repr(auth)


def test_asset_credentials_without_their_url_fail_at_load_naming_it() -> None:
    env = {
        "AUX_AUXIP_ASSET_TOKEN_URL": "http://station.example/oauth2/token",
        "AUX_AUXIP_ASSET_CLIENT_ID": "c",
    }
    with pytest.raises(ValueError, match="set AUX_AUXIP_ASSET_URL"):
        auth_from_env("AUX_AUXIP_ASSET", env, env.get("AUX_AUXIP_ASSET_URL"))
