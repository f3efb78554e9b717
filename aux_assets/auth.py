"""Credentials: the :class:`Auth` interface, static keys and tokens, OAuth2, and the one rule
for a 401 (:func:`renewing`).

Every credential is bound to origins (``scheme://host[:port]``) and sent nowhere else. A request
answered 401 is sent once more after the credentials renewed themselves (:func:`renewing`);
searches, catalog requests and transfers all follow that rule.

One OAuth2 token per account (token endpoint, client id, username, scope) and process is shared
by every :class:`OAuth2Auth` configured for it (:func:`auth_from_env`: a source and the catalog
may share one), and so by every search (threads, ``requests``) and transfer (asyncio,
``aiohttp``). It is fetched on first use (password grant when a username and password are set,
else client credentials), renewed before it expires (with the refresh token while that is valid,
else the original grant) and, after a 401, renewed once for all the requests that used the
rejected token; a failed token request is re-raised, not repeated, for ``FAILURE_HOLD_S``. A
provider counting one token as one session (CDSE: at most 100, eodag #858) therefore sees one
session per account and process, not one per product, and a wrong password one failed login.
Coroutines ask :meth:`Auth.aheaders_for`, which fetches in a worker thread: the event loop (every
other transfer) goes on meanwhile, and the tasks that need the token wait for that one fetch.

Error messages name the redacted token endpoint, the HTTP status and the server's error, never a
secret or a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, TypeVar
from urllib.parse import urlsplit

from aux_assets.utils.text import mask_secret, shorten
from aux_assets.utils.urls import origin_of, redact_url

if TYPE_CHECKING:  # imported where a token is first requested: transfers need not load it
    import httpx

_log = logging.getLogger(__name__)

DEFAULT_EXPIRES_IN_S = 300.0
FAILURE_HOLD_S = 10.0  # a failed token request is re-raised, not retried, for this long


class AuthError(RuntimeError):
    """A token request that failed: the endpoint (redacted) and why, never a credential."""


class Auth(Protocol):
    """Credentials for one origin."""

    def headers_for(self, url: str) -> dict[str, str]:
        """Auth headers for ``url``; ``{}`` when ``url`` is not on the credential's origin."""
        ...

    async def aheaders_for(self, url: str) -> dict[str, str]:
        """:meth:`headers_for` for a coroutine: any token request runs off the event loop."""
        ...

    async def refresh(self) -> bool:
        """Obtain new credentials after a 401; ``True`` if there are new ones to try."""
        ...


@dataclass(frozen=True, repr=False)
class StaticAuth:
    """An API key (``x-api-key``) and/or bearer token sent only to ``origin``."""

    origin: str
    api_key: str | None = None
    token: str | None = None

    def headers_for(self, url: str) -> dict[str, str]:
        """The credential headers if ``url`` is on :attr:`origin`, else ``{}``."""
        if origin_of(url) != origin_of(self.origin):
            return {}
        headers: dict[str, str] = {}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def aheaders_for(self, url: str) -> dict[str, str]:
        """:meth:`headers_for` (nothing to fetch)."""
        return self.headers_for(url)

    async def refresh(self) -> bool:
        """Static credentials cannot be renewed."""
        return False

    def __repr__(self) -> str:
        return (
            f"StaticAuth(origin={self.origin!r}, api_key={mask_secret(self.api_key)}, "
            f"token={mask_secret(self.token)})"
        )


class AnyOfAuth:
    """Several credentials, each bound to its own origins (a STAC API and the hosts its assets
    are downloaded from): a URL gets the headers of the first that has some for it."""

    def __init__(self, *auths: Auth) -> None:
        self.auths = auths

    def headers_for(self, url: str) -> dict[str, str]:
        # each is asked, so that each knows whether it sent something (see refresh)
        found = [headers for auth in self.auths if (headers := auth.headers_for(url))]
        return found[0] if found else {}

    async def aheaders_for(self, url: str) -> dict[str, str]:
        found = [headers for auth in self.auths if (headers := await auth.aheaders_for(url))]
        return found[0] if found else {}

    async def refresh(self) -> bool:
        """Renew the credentials that were sent (the others answer ``False``)."""
        renewed = [await auth.refresh() for auth in self.auths]
        return any(renewed)

    def __repr__(self) -> str:
        return f"AnyOfAuth({', '.join(map(repr, self.auths))})"


class Unauthorized(Exception):
    """A request answered HTTP 401; ``detail`` says so in words safe to show (no credential)."""

    def __init__(self, detail: str = "HTTP 401 Unauthorized") -> None:
        super().__init__(detail)
        self.detail = detail


T = TypeVar("T")


async def renewing(send: Callable[[], Awaitable[T]], auth: Auth | None) -> T:
    """``await send()``, and once more if it raised :class:`Unauthorized` and ``auth`` renewed
    its credentials. A second 401, or one with nothing to renew, is raised; a renewal that fails
    raises :class:`AuthError`."""
    try:
        return await send()
    except Unauthorized:
        if not await _renewed(auth):
            raise
    return await send()


def renewing_blocking(send: Callable[[], T], auth: Auth | None) -> T:
    """:func:`renewing` for a blocking ``send`` (an event loop runs only to renew: in this
    thread, or in a worker thread when this one already runs a loop, e.g. a notebook)."""
    try:
        return send()
    except Unauthorized:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            renewed = asyncio.run(_renewed(auth))
        else:
            context = contextvars.copy_context()  # the credentials' record of what was sent
            with ThreadPoolExecutor(1) as worker:
                renewed = worker.submit(context.run, asyncio.run, _renewed(auth)).result()
        if not renewed:
            raise
    return send()


async def _renewed(auth: Auth | None) -> bool:
    """Whether ``auth`` renewed its credentials after a 401 (:class:`AuthError` if it failed)."""
    if auth is None:
        return False
    try:
        return await auth.refresh()
    except AuthError:
        raise
    except Exception as exc:  # the type only: a message may quote a credential
        raise AuthError(f"credential refresh failed: {type(exc).__name__}") from None


@dataclass(frozen=True, repr=False)
class OAuth2Settings:
    """Where and how to obtain a token, and the origins (``scheme://host[:port]``) it is sent to."""

    token_url: str
    origin: str
    client_id: str
    client_secret: str | None = None
    username: str | None = None
    password: str | None = None
    scope: str | None = None
    extra_origins: tuple[str, ...] = ()
    # the Authorization header of the token request itself (rs-server's stations want a Basic one)
    token_authorization: str | None = None

    def __post_init__(self) -> None:
        if urlsplit(self.token_url).scheme.lower() not in {"http", "https"}:
            raise ValueError(f"token_url {redact_url(self.token_url)!r} must be an http(s) URL")
        if not self.client_id:
            raise ValueError("client_id must not be empty")
        if bool(self.username) != bool(self.password):
            missing = "password" if self.username else "username"
            raise ValueError(f"the password grant needs both username and password: set {missing}")

    @property
    def grant_type(self) -> str:
        """``password`` when a username and password are set, else ``client_credentials``."""
        return "password" if self.username and self.password else "client_credentials"

    def __repr__(self) -> str:
        return (
            f"OAuth2Settings(token_url={redact_url(self.token_url)!r}, origin={self.origin!r}, "
            f"client_id={self.client_id!r}, client_secret={mask_secret(self.client_secret)}, "
            f"username={self.username!r}, password={mask_secret(self.password)}, "
            f"scope={self.scope!r}, extra_origins={self.extra_origins!r}, "
            f"token_authorization={mask_secret(self.token_authorization)}, "
            f"grant_type={self.grant_type!r})"
        )


@dataclass(frozen=True, repr=False)
class _Token:
    """An access token, when to renew it, and the refresh token that may do so."""

    access_token: str
    renew_at: float
    refresh_token: str | None
    refresh_expires_at: float | None
    generation: int


class OAuth2Auth:
    """An :class:`Auth` sending its account's shared, proactively renewed OAuth2 token to its
    origins.

    ``shared``: the token of the process's one :class:`_Account` for these settings (token URL,
    client id, username, scope: :func:`_account_of`), else one of its own. Thread-safe;
    ``refresh`` and ``aheaders_for`` may be awaited from any number of tasks at once.
    """

    def __init__(
        self,
        settings: OAuth2Settings,
        *,
        shared: bool = False,
        refresh_margin_s: float = 60.0,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._origins = frozenset(origin_of(o) for o in (settings.origin, *settings.extra_origins))
        self._account = (
            _account_of(settings)
            if shared
            else _Account(
                settings, refresh_margin_s=refresh_margin_s, timeout_s=timeout_s, clock=clock
            )
        )
        # Generation of the token the current thread/task last sent (None: it sent none of ours).
        self._sent: ContextVar[int | None] = ContextVar(f"oauth2_sent_{id(self)}")

    @property
    def settings(self) -> OAuth2Settings:
        """The settings this instance was built with."""
        return self._settings

    @property
    def token_requests(self) -> int:
        """How many requests were made to the token endpoint for the account."""
        return self._account.requests

    def headers_for(self, url: str) -> dict[str, str]:
        """A bearer header for the allowed origins (fetching a token when due); ``{}`` elsewhere."""
        if not self._serves(url):
            return {}
        token = self._account.token
        if not self._account.valid(token):
            token = self._account.renew(_generation(token))
        return self._bearer(token)

    async def aheaders_for(self, url: str) -> dict[str, str]:
        """:meth:`headers_for` for a coroutine: a due token is fetched in a worker thread, once
        for all the tasks that need it meanwhile."""
        if not self._serves(url):
            return {}
        token = self._account.token
        if not self._account.valid(token):
            token = await self._account.renew_off_loop(_generation(token))
        return self._bearer(token)

    async def refresh(self) -> bool:
        """Renew the token after a 401, unless another caller already replaced the one sent.

        ``False`` when the last request of this task carried none of our tokens (a 401 from
        another origin, which a new token cannot fix).
        """
        try:
            sent = self._sent.get()
        except LookupError:
            sent = _generation(self._account.token)
        if sent is None:
            return False
        await self._account.renew_off_loop(sent)
        return True

    def __repr__(self) -> str:
        return f"OAuth2Auth({self._settings!r}, token_requests={self.token_requests})"

    def _serves(self, url: str) -> bool:
        """Whether ``url`` is on our origins (if not, this task sent none of our tokens)."""
        if origin_of(url) in self._origins:
            return True
        self._sent.set(None)
        return False

    def _bearer(self, token: _Token) -> dict[str, str]:
        self._sent.set(token.generation)
        return {"Authorization": f"Bearer {token.access_token}"}


def _generation(token: _Token | None) -> int:
    return token.generation if token else 0


_AccountKey = tuple[str, str, str | None, str | None]
_accounts: dict[_AccountKey, _Account] = {}
_accounts_lock = threading.Lock()


def _account_of(settings: OAuth2Settings) -> _Account:
    """The process's one :class:`_Account` for the token URL, client id, username and scope of
    ``settings`` (no secret in the key); other secrets than its own make a new one."""
    key = (settings.token_url, settings.client_id, settings.username, settings.scope)
    with _accounts_lock:
        account = _accounts.get(key)
        if account is None or not account.same_secrets(settings):
            account = _accounts[key] = _Account(settings)
        return account


class _Account:
    """The token of one OAuth2 account: fetched on first use, renewed when due or rejected."""

    def __init__(
        self,
        settings: OAuth2Settings,
        *,
        refresh_margin_s: float = 60.0,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._margin = refresh_margin_s
        self._timeout = timeout_s
        self._clock = clock
        self._lock = threading.Lock()  # held during a token request
        self.token: _Token | None = None
        self._failure: tuple[float, AuthError] | None = None
        self.requests = 0
        self._flight_lock = threading.Lock()
        self._flight: Future[_Token] | None = None  # the token request of renew_off_loop

    def same_secrets(self, settings: OAuth2Settings) -> bool:
        """Whether ``settings`` log in with the same secrets as this account."""
        mine = self._settings
        return (mine.client_secret, mine.password, mine.token_authorization) == (
            settings.client_secret,
            settings.password,
            settings.token_authorization,
        )

    def valid(self, token: _Token | None) -> TypeGuard[_Token]:
        """Whether ``token`` is there and not yet due for renewal."""
        return token is not None and self._clock() < token.renew_at

    def renew(self, stale_generation: int) -> _Token:
        """A token newer than ``stale_generation``: the current one, or a new one if it is stale."""
        with self._lock:
            token = self.token
            if token is not None and token.generation != stale_generation:
                return token
            if self._failure and self._clock() < self._failure[0] + FAILURE_HOLD_S:
                # N transfers must not make N failed logins (providers lock such accounts)
                raise AuthError(*self._failure[1].args)
            try:
                self.token = self._obtain(token)
            except AuthError as exc:
                self._failure = (self._clock(), exc)
                raise
            self._failure = None
            return self.token

    async def renew_off_loop(self, stale_generation: int) -> _Token:
        """:meth:`renew` in a worker thread, the event loop going on meanwhile; callers in any
        task, loop or thread wait for the request already in flight rather than start one."""
        while True:
            token = await asyncio.wrap_future(self._flight_for(stale_generation))
            if token.generation != stale_generation:  # else it was in flight for an older one
                return token

    def _flight_for(self, stale_generation: int) -> Future[_Token]:
        """The renewal in flight, started in a new worker thread when there is none."""
        with self._flight_lock:
            if self._flight is None or self._flight.done():
                self._flight = Future()
                self._flight.set_running_or_notify_cancel()  # a cancelled waiter cancels not it
                threading.Thread(
                    target=self._fly,
                    args=(self._flight, stale_generation),
                    name="oauth2-token",
                    daemon=True,
                ).start()
            return self._flight

    def _fly(self, flight: Future[_Token], stale_generation: int) -> None:
        try:
            flight.set_result(self.renew(stale_generation))
        except Exception as exc:
            flight.set_exception(exc)

    def _obtain(self, old: _Token | None) -> _Token:
        """Use the refresh token while it is valid (falling back if rejected), else the grant."""
        generation = old.generation + 1 if old else 1
        if old and old.refresh_token:
            expires = old.refresh_expires_at
            if expires is None or self._clock() < expires:
                try:
                    fields = {"grant_type": "refresh_token", "refresh_token": old.refresh_token}
                    return self._request(fields, generation, old)
                except AuthError as exc:
                    _log.info("%s; falling back to the %s grant", exc, self._settings.grant_type)
        s = self._settings
        fields = {"grant_type": s.grant_type}
        if s.username and s.password:
            fields |= {"username": s.username, "password": s.password}
        if s.scope:
            fields["scope"] = s.scope
        return self._request(fields, generation, old)

    def _request(self, fields: dict[str, str], generation: int, old: _Token | None) -> _Token:
        """POST one grant to the token endpoint (form-encoded, RFC 6749) and parse the answer."""
        import httpx

        s = self._settings
        data = {**fields, "client_id": s.client_id}
        if s.client_secret:
            data["client_secret"] = s.client_secret
        secrets = [
            s.client_secret,
            s.password,
            s.token_authorization,
            *((old.access_token, old.refresh_token) if old else ()),
        ]
        grant = fields["grant_type"]
        self.requests += 1
        issued = self._clock()
        try:
            headers = {"Authorization": s.token_authorization} if s.token_authorization else {}
            response = self._post(data, headers)
        except httpx.HTTPError as exc:
            raise self._error(grant, f"{type(exc).__name__}: {exc}", secrets) from None
        payload = _json_object(response)
        if not response.is_success:
            detail = f"HTTP {response.status_code} {response.reason_phrase}"
            if payload and payload.get("error"):
                detail += f": {payload['error']}"
                if payload.get("error_description"):
                    detail += f" ({payload['error_description']})"
            raise self._error(grant, detail, secrets)
        try:
            token = self._parse(payload, issued, generation)
        except ValueError as exc:
            raise self._error(grant, str(exc), secrets) from None
        _log.debug(
            "%s grant at %s: token %d for client %s",
            grant,
            redact_url(s.token_url),
            generation,
            s.client_id,
        )
        return token

    def _post(self, data: dict[str, str], headers: dict[str, str]) -> httpx.Response:
        """POST a form to the token endpoint, with a client of its own (requests are minutes
        apart: nothing to keep open between them)."""
        import httpx

        with httpx.Client(headers={"Accept": "application/json"}, timeout=self._timeout) as client:
            return client.post(self._settings.token_url, data=data, headers=headers)

    def _parse(self, payload: dict[str, Any] | None, issued: float, generation: int) -> _Token:
        """The token in a successful answer; ``ValueError`` saying what is wrong with it."""
        if payload is None:
            raise ValueError("the answer is not a JSON object")
        access = payload.get("access_token")
        if not isinstance(access, str) or not access:
            raise ValueError("the answer has no access_token")
        if str(payload.get("token_type", "bearer")).lower() != "bearer":
            raise ValueError(f"unsupported token_type {payload['token_type']!r}")
        lifetime = _seconds(payload, "expires_in") or DEFAULT_EXPIRES_IN_S
        refresh = payload.get("refresh_token")
        refresh_lifetime = _seconds(payload, "refresh_expires_in")
        return _Token(
            access_token=access,
            renew_at=issued + max(lifetime - self._margin, lifetime / 2),
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            refresh_expires_at=issued + refresh_lifetime if refresh_lifetime else None,
            generation=generation,
        )

    def _error(self, grant: str, detail: str, secrets: list[str | None]) -> AuthError:
        for secret in secrets:
            if secret:
                detail = detail.replace(secret, "***")
        return AuthError(
            f"{grant} grant at token endpoint {redact_url(self._settings.token_url)} "
            f"failed: {shorten(detail)}"
        )


def auth_from_env(
    prefix: str,
    env: Mapping[str, str],
    source_url: str | None,
    default_origins: tuple[str, ...] = (),
) -> Auth | None:
    """Credentials of the source configured by ``<prefix>_*`` variables, bound to its origin.

    ``_TOKEN_URL`` + ``_CLIENT_ID`` (+ ``_CLIENT_SECRET``, ``_USERNAME``, ``_PASSWORD``, ``_SCOPE``)
    give an :class:`OAuth2Auth` (with the process's one token of that account);
    ``_TOKEN`` / ``_API_KEY`` a :class:`StaticAuth`; nothing, ``None``.
    The OAuth2 token also goes to the origins in ``_AUTH_ORIGINS`` (comma-separated), else to
    ``default_origins`` (a source's download hosts where they differ from its STAC root: see
    :mod:`aux_assets.sources.profiles`); ``_TOKEN_AUTHORIZATION`` is the ``Authorization``
    header of the token request itself (e.g. ``Basic ...``).
    Incomplete or conflicting settings raise a ``ValueError`` naming the variable to set.
    """

    def get(name: str) -> str | None:
        return env.get(f"{prefix}_{name}") or None

    oauth = {n: get(n) for n in ("TOKEN_URL", "CLIENT_ID", "CLIENT_SECRET", "USERNAME", "PASSWORD")}
    scope, token, api_key = get("SCOPE"), get("TOKEN"), get("API_KEY")
    token_authorization = get("TOKEN_AUTHORIZATION")
    if any(oauth.values()) or scope or token_authorization:
        static = [f"{prefix}_{n}" for n, v in (("TOKEN", token), ("API_KEY", api_key)) if v]
        if static:
            raise ValueError(
                f"OAuth2 ({prefix}_TOKEN_URL, ...) and {' and '.join(static)} are both set: "
                "unset one of them"
            )
        for have, need in (
            ("TOKEN_URL", "CLIENT_ID"),
            ("USERNAME", "PASSWORD"),
            ("PASSWORD", "USERNAME"),
        ):
            if oauth[have] and not oauth[need]:
                raise ValueError(f"{prefix}_{have} is set: set {prefix}_{need} too")
        token_url, client_id = oauth["TOKEN_URL"], oauth["CLIENT_ID"]
        if not token_url or not client_id:
            raise ValueError(f"OAuth2 settings for {prefix} are incomplete: set {prefix}_TOKEN_URL")
        if urlsplit(token_url).scheme.lower() not in {"http", "https"}:
            raise ValueError(f"{prefix}_TOKEN_URL must be an http(s) URL")
        return OAuth2Auth(
            OAuth2Settings(
                token_url=token_url,
                origin=_source_origin(prefix, source_url),
                client_id=client_id,
                client_secret=oauth["CLIENT_SECRET"],
                username=oauth["USERNAME"],
                password=oauth["PASSWORD"],
                scope=scope,
                extra_origins=_extra_origins(prefix, get("AUTH_ORIGINS"), default_origins),
                token_authorization=token_authorization,
            ),
            shared=True,
        )
    if token or api_key:
        return StaticAuth(origin=_source_origin(prefix, source_url), api_key=api_key, token=token)
    return None


def _extra_origins(prefix: str, value: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    origins = tuple(v.strip() for v in value.split(",") if v.strip())
    for origin in origins:
        if urlsplit(origin).scheme.lower() not in {"http", "https"} or not urlsplit(origin).netloc:
            raise ValueError(f"{prefix}_AUTH_ORIGINS: {origin!r} is not an http(s) origin")
    return tuple(origin_of(o) for o in origins)


def _source_origin(prefix: str, source_url: str | None) -> str:
    if not source_url:
        raise ValueError(f"credentials are set for {prefix} but its URL is not: set {prefix}_URL")
    return origin_of(source_url)


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        payload = response.json()
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _seconds(payload: dict[str, Any], key: str) -> float | None:
    """A lifetime in seconds; ``None`` when absent or 0 (no expiry given); ``ValueError`` if bad."""
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):
            seconds = float(value)
            if math.isfinite(seconds) and seconds >= 0:
                return seconds or None
    raise ValueError(f"malformed {key} in the answer")
