"""The platform client: the one module that knows the platform's URLs, tokens and error codes.

Every call is ``POST <base><path>?access_token=TOKEN`` with a JSON body and answers ``errcode``/``errmsg``
(../shared/docs/platform-api.md). What the client does with each error:

| errcode                 | behaviour                                                                  |
|-------------------------|----------------------------------------------------------------------------|
| 0                       | return the body                                                            |
| -1 (busy), HTTP 5xx,    | retry with exponential backoff and jitter, then ``PlatformUnavailable``    |
| timeouts, resets        |                                                                            |
| 45011 (minute quota)    | wait for the next minute once if it is near, else ``RateLimited(until)``   |
| 40001, 40014, 42001     | fetch a fresh token once, retry the call once, then ``TokenRejected``      |
| 45009 (daily quota)     | record an ``ApiBlock`` until the shop's next day, raise ``QuotaExhausted`` |
| 48001, 61007            | record an ``ApiBlock`` (setup problem), raise ``NotAuthorized``            |
| 41001, 47001, 40097     | a bug or bad input: ``BadRequest``, never retried                          |
| anything else           | ``BusinessError`` carrying errcode/errmsg (e.g. 10021059, 10021068)        |

Tokens are cached in the database (``platform_tokens``), shared by every process: a token is reused
until five minutes before it expires. Ids in responses are kept as strings.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import requests
import sqlalchemy as sa
from requests.adapters import HTTPAdapter
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.db import utcnow
from app.models import ApiBlock, PlatformToken

log = logging.getLogger(__name__)

TOKEN_PATH = "/cgi-bin/stable_token"  # noqa: S105 - a URL path, not a secret
TOKEN_ERRORS = frozenset({40001, 40014, 42001})
BUSY = -1
MINUTE_QUOTA = 45011
DAILY_QUOTA = 45009
NOT_AUTHORIZED = frozenset({48001, 61007})
BAD_REQUEST = frozenset({41001, 47001, 40097})
TOKEN_EARLY_REFRESH = timedelta(minutes=5)
FORCE_REFRESH_SPACING = timedelta(seconds=30)


class PlatformError(Exception):
    """A call to the platform failed; ``errcode``/``errmsg`` are the platform's when it answered.

    ``until`` is set when the API may not be called again before a known time (quota, a block):
    callers defer their work to then instead of counting it as a failure.
    """

    def __init__(
        self,
        message: str,
        *,
        api: str = "",
        errcode: int | None = None,
        errmsg: str | None = None,
        until: datetime | None = None,
    ):
        super().__init__(message)
        self.api = api
        self.errcode = errcode
        self.errmsg = errmsg
        self.until = until

    @property
    def retryable(self) -> bool:
        return False


class PlatformUnavailable(PlatformError):
    """Busy, 5xx, timeouts or connection errors that outlasted the retries. Try again later."""

    @property
    def retryable(self) -> bool:
        return True


class RateLimited(PlatformUnavailable):
    """Per-minute quota (45011) still hit after backing off."""


class TokenRejected(PlatformError):
    """The platform refused a freshly fetched token too. Usually passing (another process forced a
    refresh); if it persists, a credentials or clock problem. Callers retry later, with backoff."""

    @property
    def retryable(self) -> bool:
        return True


class QuotaExhausted(PlatformError):
    """The daily quota of this API is used up (45009): no calls until the next day."""


class NotAuthorized(PlatformError):
    """This app may not call this API (48001, 61007): a shop setup problem for an admin."""


class ApiBlocked(PlatformError):
    """The API is blocked by an earlier QuotaExhausted / NotAuthorized; not called."""


class BadRequest(PlatformError):
    """The request itself is wrong (41001, 47001, 40097): a bug or bad input, never retried."""


class BusinessError(PlatformError):
    """The platform refused the operation for a business reason (errcode says which)."""


@dataclass(frozen=True)
class Credentials:
    shop_id: int
    appid: str
    # The app secret, or how to read it: it is needed only to fetch a token (every two hours), so
    # the desk reads and decrypts it then, not for every call.
    secret: str | Callable[[], str]
    base_url: str
    timezone: str = "Asia/Shanghai"


def ids_to_str(value: Any) -> Any:
    """Platform ids as strings, recursively: ``*_id`` keys and ``*_id_list`` lists. A NUL
    character in any text becomes U+FFFD: PostgreSQL cannot store it, and refusing the push would
    lose the buyer's message (the platform gives up after its re-sends)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key.endswith("_id") and isinstance(item, int) and not isinstance(item, bool):
                out[key] = str(item)
            elif key.endswith("_id_list") and isinstance(item, list):
                out[key] = [str(i) for i in item]
            else:
                out[key] = ids_to_str(item)
        return out
    if isinstance(value, list):
        return [ids_to_str(item) for item in value]
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


@dataclass(frozen=True)
class _Remembered:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class _Blocks:
    read_at: float  # time.monotonic()
    by_api: dict[str, ApiBlock]


class TokenStore:
    """Tokens and API blocks in the database, read and written in sessions of their own (never the
    caller's), with a memory per process and engine in front of them.

    - A token read or fetched once is reused from memory until five minutes before it expires. When
      another process replaced it meanwhile (a forced refresh), the platform rejects the old one
      and the client asks the database again before it asks the platform (``forget``).
    - A shop's blocks (``api_blocks``) are read at most every ``BLOCKS_FRESH_FOR`` seconds: a block
      recorded by another process is obeyed within that time (the platform refuses the calls made
      meanwhile with the same errcode, which records the block again: nothing is lost).

    The database stays the truth every process shares; memory only saves two reads per call, which
    a burst of after-sales pays five times per case (docs/architecture.md, "Rules", Measured).
    """

    BLOCKS_FRESH_FOR = 5.0
    _memory: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    _memory_lock = threading.Lock()

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        with self._memory_lock:
            found = self._memory.get(engine)
            if found is None:
                found = self._memory[engine] = ({}, {})
        self._tokens: dict[int, _Remembered] = found[0]
        self._blocks: dict[int, _Blocks] = found[1]

    def get(self, shop_id: int) -> PlatformToken | None:
        """The stored token row, from the database (fills the memory)."""
        with Session(self.engine, expire_on_commit=False) as session:
            row = session.get(PlatformToken, shop_id)
        if row is not None:
            self._tokens[shop_id] = _Remembered(row.access_token, row.expires_at)
        return row

    def usable(self, shop_id: int, now: datetime) -> str | None:
        """A token good for at least five more minutes: from memory, else from the database."""
        known = self._tokens.get(shop_id)
        if known is None:
            row = self.get(shop_id)
            known = self._tokens.get(shop_id) if row is not None else None
        if known is not None and known.expires_at - TOKEN_EARLY_REFRESH > now:
            return known.token
        return None

    def forget(self, shop_id: int) -> None:
        self._tokens.pop(shop_id, None)

    @classmethod
    def forget_all(cls) -> None:
        """Empty every engine's memory (tests: shop ids repeat after the tables are emptied)."""
        with cls._memory_lock:
            for tokens, blocks in cls._memory.values():
                tokens.clear()
                blocks.clear()

    def put(self, shop_id: int, token: str, expires_in: int, forced: bool) -> None:
        """Insert or replace the shop's token in one statement (several processes may race here)."""
        now = utcnow()
        values = {"access_token": token, "expires_at": now + timedelta(seconds=expires_in), "fetched_at": now}
        if forced:
            values["forced_at"] = now
        dialect_insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        stmt = dialect_insert(PlatformToken.__table__).values(shop_id=shop_id, **values)
        stmt = stmt.on_conflict_do_update(index_elements=["shop_id"], set_=values)
        with Session(self.engine) as session, session.begin():
            session.execute(stmt)
        self._tokens[shop_id] = _Remembered(token, values["expires_at"])

    def block(self, shop_id: int, api: str, errcode: int, errmsg: str, until: datetime) -> None:
        values = {"errcode": errcode, "errmsg": errmsg, "blocked_until": until, "created_at": utcnow()}
        dialect_insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        stmt = dialect_insert(ApiBlock.__table__).values(shop_id=shop_id, api=api, **values)
        stmt = stmt.on_conflict_do_update(index_elements=["shop_id", "api"], set_=values)
        with Session(self.engine) as session, session.begin():
            session.execute(stmt)
        self._blocks.pop(shop_id, None)  # read again, with this block, on the next call

    def blocked(self, shop_id: int, api: str) -> ApiBlock | None:
        known = self._blocks.get(shop_id)
        if known is None or time.monotonic() - known.read_at > self.BLOCKS_FRESH_FOR:
            read_at = time.monotonic()
            with Session(self.engine, expire_on_commit=False) as session:
                rows = session.scalars(
                    sa.select(ApiBlock).where(ApiBlock.shop_id == shop_id, ApiBlock.blocked_until > utcnow())
                ).all()
            known = self._blocks[shop_id] = _Blocks(read_at, {row.api: row for row in rows})
        block = known.by_api.get(api)
        return block if block is not None and block.blocked_until > utcnow() else None


_sessions = threading.local()
_environments: dict[str, dict[str, Any]] = {}


def environment_settings(url: str) -> dict[str, Any]:
    """What requests takes from the environment for calls to ``url``: the proxy (``HTTPS_PROXY``,
    ``HTTP_PROXY``, ``NO_PROXY``) and the CA bundle (``REQUESTS_CA_BUNDLE``), read once per URL and
    passed with every call. The desk's sessions do not read the environment themselves: a session
    that does scans all of it twice per call and looks for a .netrc: 14-25% of a call's CPU
    (bench/platform_call.py)."""
    settings = _environments.get(url)
    if settings is None:
        merged = requests.Session().merge_environment_settings(url, {}, None, None, None)
        settings = _environments[url] = {key: merged[key] for key in ("proxies", "verify", "cert")}
    return settings


def http_session() -> requests.Session:
    """A pooled requests.Session per thread (requests sessions are not thread-safe to share)."""
    session = getattr(_sessions, "session", None)
    if session is None:
        session = requests.Session()
        session.trust_env = False  # environment_settings: read once, not per call
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=32, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _sessions.session = session
    return session


class PlatformClient:
    def __init__(
        self,
        credentials: Credentials,
        tokens: TokenStore,
        *,
        timeout: tuple[float, float] = (3.05, 10.0),
        max_attempts: int = 4,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        rate_limit_wait_cap: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
    ):
        self.credentials = credentials
        self.tokens = tokens
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.rate_limit_wait_cap = rate_limit_wait_cap
        self.sleep = sleep
        self._session = session

    @property
    def http(self) -> requests.Session:
        return self._session or http_session()

    # --- tokens ---------------------------------------------------------------------------------

    def access_token(self) -> str:
        token = self.tokens.usable(self.credentials.shop_id, utcnow())
        return token if token is not None else self._fetch_token(force=False)

    def check_credentials(self) -> str:
        """Fetch a token from the platform with the app secret (the connection test)."""
        return self._fetch_token(force=False)

    def _fetch_token(self, force: bool) -> str:
        body = {
            "grant_type": "client_credential",
            "appid": self.credentials.appid,
            "secret": self.credentials.secret() if callable(self.credentials.secret) else self.credentials.secret,
            "force_refresh": force,
        }
        data = self._post(TOKEN_PATH, body, params=None)
        errcode = data.get("errcode", 0)
        if errcode:
            raise self._error_for(TOKEN_PATH, errcode, data.get("errmsg", ""))
        token = data["access_token"]
        self.tokens.put(self.credentials.shop_id, token, int(data.get("expires_in", 7200)), forced=force)
        return token

    def _refresh_after_rejection(self, rejected: str) -> str:
        """A fresh token after the platform refused ``rejected``: the one another process stored
        meanwhile if there is one, else a normal fetch, forced if that gives the same token back."""
        self.tokens.forget(self.credentials.shop_id)
        stored = self.tokens.usable(self.credentials.shop_id, utcnow())
        if stored is not None and stored != rejected:
            return stored
        token = self._fetch_token(force=False)
        if token != rejected:
            return token
        row = self.tokens.get(self.credentials.shop_id)
        if row is not None and row.forced_at and utcnow() - row.forced_at < FORCE_REFRESH_SPACING:
            return token  # another process forced one a moment ago; its token is the one to use
        return self._fetch_token(force=True)

    # --- calls ----------------------------------------------------------------------------------

    def call(self, api: str, body: dict[str, Any], files: dict | None = None) -> dict[str, Any]:
        """POST ``api`` with ``body``; returns the answer (errcode 0) with ids as strings.

        With ``files`` the body goes as multipart form fields next to them (media upload).
        """
        block = self.tokens.blocked(self.credentials.shop_id, api)
        if block is not None:
            raise ApiBlocked(
                f"{api} is blocked until {block.blocked_until.isoformat()} (errcode {block.errcode})",
                api=api,
                errcode=block.errcode,
                errmsg=block.errmsg,
                until=block.blocked_until,
            )
        token = self.access_token()
        token_retried = False
        waited_for_minute = False
        attempt = 0
        while True:
            attempt += 1
            try:
                data = self._post(api, body, params={"access_token": token}, files=files)
            except PlatformUnavailable:
                if attempt >= self.max_attempts:
                    raise
                self.sleep(self._backoff(attempt))
                continue
            errcode = data.get("errcode", 0)
            if not errcode:
                return ids_to_str(data)
            errmsg = data.get("errmsg", "")
            if errcode in TOKEN_ERRORS and not token_retried:
                token_retried = True
                token = self._refresh_after_rejection(token)
                continue
            if errcode == BUSY and attempt < self.max_attempts:
                self.sleep(self._backoff(attempt))
                continue
            if errcode == MINUTE_QUOTA:
                wait = self._until_next_minute()
                if not waited_for_minute and wait <= self.rate_limit_wait_cap:
                    waited_for_minute = True
                    self.sleep(wait)
                    continue
                # Not worth blocking a worker for: the caller defers until the next minute.
                raise RateLimited(
                    f"{api}: errcode 45011 {errmsg}".strip(),
                    api=api,
                    errcode=errcode,
                    errmsg=errmsg,
                    until=utcnow() + timedelta(seconds=wait),
                )
            raise self._error_for(api, errcode, errmsg)

    def _post(self, api: str, body: dict, params: dict | None, files: dict | None = None) -> dict:
        url = self.credentials.base_url.rstrip("/") + api
        # The desk's sessions read no environment (environment_settings); a session given to the
        # client keeps its own settings and requests' defaults.
        environment = environment_settings(self.credentials.base_url) if self._session is None else {}
        failure = None
        try:
            if files:
                response = self.http.post(url, data=body, files=files, params=params, timeout=self.timeout,
                                          **environment)
            else:
                response = self.http.post(url, json=body, params=params, timeout=self.timeout, **environment)
        except (requests.Timeout, requests.ConnectionError) as exc:
            failure = type(exc).__name__
        if failure is not None:
            # Raised outside the except block, so the requests exception (its text carries the URL,
            # and the URL the access token) is not attached as context to be logged or stored.
            host = self.credentials.base_url.split("//", 1)[-1].split("/", 1)[0]
            raise PlatformUnavailable(f"{api}: {failure} talking to {host}", api=api)
        if response.status_code >= 500 or response.status_code == 429:
            raise PlatformUnavailable(f"{api}: HTTP {response.status_code}", api=api)
        if response.status_code >= 400:
            raise BadRequest(f"{api}: HTTP {response.status_code}", api=api)
        try:
            return response.json()
        except ValueError as exc:
            raise PlatformUnavailable(f"{api}: answer is not JSON", api=api) from exc

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)  # noqa: S311

    def _until_next_minute(self) -> float:
        return 60.0 - time.time() % 60 + 0.05

    def _error_for(self, api: str, errcode: int, errmsg: str) -> PlatformError:
        message = f"{api}: errcode {errcode} {errmsg}".strip()
        kwargs = {"api": api, "errcode": errcode, "errmsg": errmsg}
        if errcode == DAILY_QUOTA:
            tz = ZoneInfo(self.credentials.timezone)
            tomorrow = (datetime.now(tz) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
            self.tokens.block(self.credentials.shop_id, api, errcode, errmsg, tomorrow)
            log.error("shop %s: daily quota of %s reached; paused until %s", self.credentials.shop_id, api, tomorrow)
            return QuotaExhausted(message, until=tomorrow, **kwargs)
        if errcode in NOT_AUTHORIZED:
            until = utcnow() + timedelta(hours=1)
            self.tokens.block(self.credentials.shop_id, api, errcode, errmsg, until)
            log.error("shop %s: not authorised to call %s (%s)", self.credentials.shop_id, api, errcode)
            return NotAuthorized(message, until=until, **kwargs)
        if errcode in TOKEN_ERRORS:
            return TokenRejected(message, **kwargs)
        if errcode in BAD_REQUEST:
            return BadRequest(message, **kwargs)
        if errcode == BUSY:
            return PlatformUnavailable(message, **kwargs)
        if errcode == MINUTE_QUOTA:
            return RateLimited(message, **kwargs)
        return BusinessError(message, **kwargs)

    # --- the APIs the desk uses -----------------------------------------------------------------

    def list_orders(
        self, start: int, end: int, next_key: str | None = None, page_size: int = 100, by: str = "update"
    ) -> dict:
        """Order ids updated (``by="update"``) or created (``by="create"``) in [start, end] (unix seconds)."""
        body: dict[str, Any] = {f"{by}_time_range": {"start_time": start, "end_time": end}, "page_size": page_size}
        if next_key:
            body["next_key"] = next_key
        return self.call("/channels/ec/order/list/get", body)

    def get_order(self, order_id: str) -> dict:
        return self.call("/channels/ec/order/get", {"order_id": str(order_id)})["order"]

    def decode_address(self, order_id: str) -> dict:
        return self.call("/channels/ec/order/sensitiveinfo/decode", {"order_id": str(order_id)})

    def list_after_sales(self, start: int, end: int, next_key: str | None = None, by: str = "update") -> dict:
        """After-sale ids updated or created (``by``) in [start, end]; at most 24 hours apart."""
        body: dict[str, Any] = {f"begin_{by}_time": start, f"end_{by}_time": end}
        if next_key:
            body["next_key"] = next_key
        return self.call("/channels/ec/aftersale/getaftersalelist", body)

    def get_after_sale(self, after_sale_order_id: str) -> dict:
        answer = self.call("/channels/ec/aftersale/getaftersaleorder", {"after_sale_order_id": after_sale_order_id})
        return answer["after_sale_order"]

    def accept_after_sale(
        self, after_sale_order_id: str, address_id: str | None = None, accept_type: int | None = None
    ) -> dict:
        body: dict[str, Any] = {"after_sale_order_id": after_sale_order_id}
        if address_id:
            body["address_id"] = address_id
        if accept_type:
            body["accept_type"] = accept_type
        return self.call("/channels/ec/aftersale/acceptapply", body)

    def reject_after_sale(self, after_sale_order_id: str, reason_type: int, reason: str | None = None) -> dict:
        body: dict[str, Any] = {"after_sale_order_id": after_sale_order_id, "reject_reason_type": reason_type}
        if reason:
            body["reject_reason"] = reason
        return self.call("/channels/ec/aftersale/rejectapply", body)

    def reject_reasons(self) -> list[dict]:
        answer = self.call("/channels/ec/aftersale/rejectreason/get", {})
        # Documented as reason_list, reported live as reject_reason_list: accept both.
        return answer.get("reject_reason_list") or answer.get("reason_list") or []

    def list_addresses(self, offset: int = 0, limit: int = 100) -> list[str]:
        answer = self.call("/channels/ec/merchant/address/list", {"offset": offset, "limit": limit})
        return answer.get("address_id_list") or []

    def get_address(self, address_id: str) -> dict:
        return self.call("/channels/ec/merchant/address/get", {"address_id": address_id})["address_detail"]

    def add_address(self, detail: dict) -> str:
        return self.call("/channels/ec/merchant/address/add", {"address_detail": detail})["address_id"]

    def update_address(self, detail: dict) -> None:
        self.call("/channels/ec/merchant/address/update", {"address_detail": detail})

    def delete_address(self, address_id: str) -> None:
        self.call("/channels/ec/merchant/address/delete", {"address_id": address_id})

    def upload_media(self, open_id: str, msg_type: str, filename: str, data: bytes, content_type: str) -> str:
        """commkf/cosupload: a file for a message to ``open_id``; returns its ``cos_url`` (kept 14 days)."""
        answer = self.call(
            "/channels/ec/commkf/cosupload",
            {"msg_type": msg_type, "open_id": open_id},
            files={"file": (filename, data, content_type)},
        )
        return answer["cos_url"]

    def send_message(self, open_id: str, msg_type: str, content: dict, request_id: str | None = None) -> str:
        body: dict[str, Any] = {"open_id": open_id, "msg_type": msg_type, msg_type: content}
        if request_id:
            body["request_id"] = request_id
        return self.call("/channels/ec/commkf/sendmsg", body).get("msg_id", "")
