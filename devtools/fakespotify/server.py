"""The fake Spotify: the accounts service and the Web API over real HTTP, for tests and ``make local``.

It behaves like Spotify where MYI depends on it: authorisation with auto-approval, a token endpoint
that really checks PKCE and rotates refresh tokens (a spent one then fails with ``invalid_grant``),
Bearer tokens that expire, ``recently-played`` holding only the latest 50 plays with exclusive
``after``/``before`` cursors, top lists, single-item catalog reads, batch reads only when allowed
(Development Mode lost them in 2026), and fault injection: a status (429 with ``Retry-After``, 5xx)
or a delay for the next requests to a path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from devtools.fakespotify.world import TIME_RANGES, World

CODE_TTL_S = 600
RECENT_LIMIT = 50  # Spotify keeps only the latest 50 plays
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_ID = re.compile(r"[0-9A-Za-z]{22}")
_BATCH_MAX = {"tracks": 50, "artists": 50, "albums": 20}


@dataclass
class Fault:
    path_prefix: str
    status: int | None
    retry_after: float | None
    times: int
    delay_s: float
    body: Any


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    user: str
    expires_at: float


class _Reply(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}


def _api_error(status: int, message: str, headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(status, {"error": {"status": status, "message": message}}, headers)


def _oauth_error(code: str, description: str, status: int = 400) -> _Reply:
    return _Reply(status, {"error": code, "error_description": description})


def _iso_ms(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


class FakeSpotify:
    def __init__(
        self,
        world: World | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = "myi-local",
        client_secret: str = "myi-local-secret",  # noqa: S107 - the fake's own, published
        rotate_refresh_tokens: bool = True,
        access_token_ttl_s: int = 3600,
        batch_reads: bool = False,
    ) -> None:
        self.world = world or World()
        self.client_id, self.client_secret = client_id, client_secret
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.access_token_ttl_s = access_token_ttl_s
        self.batch_reads = batch_reads
        self._lock = threading.RLock()
        self._codes: dict[str, _Code] = {}
        self._refresh: dict[str, str] = {}  # refresh token -> user
        # access token -> (user, or None for an app token, expires at)
        self._access: dict[str, tuple[str | None, float]] = {}
        self._issued: list[str] = []
        self._faults: list[Fault] = []
        self._login_as: str | None = None
        self._deny_next = False
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def accounts_url(self) -> str:
        return self.url

    @property
    def api_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> FakeSpotify:
        self.world.base_url = self.api_url
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-spotify", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeSpotify:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- control ------------------------------------------------------------------------------
    def login_as(self, user: str) -> None:
        with self._lock:
            self._login_as = user

    def deny_next_login(self) -> None:
        with self._lock:
            self._deny_next = True

    def revoke(self, user: str) -> None:
        with self._lock:
            self._refresh = {t: u for t, u in self._refresh.items() if u != user}
            self._access = {t: v for t, v in self._access.items() if v[0] != user}

    def expire_access_tokens(self) -> None:
        with self._lock:
            self._access = {t: (u, 0.0) for t, (u, _) in self._access.items()}

    def inject(
        self,
        path_prefix: str,
        status: int | None = 500,
        *,
        retry_after: float | None = None,
        times: int = 1,
        delay_s: float = 0.0,
        body: Any = None,
    ) -> None:
        with self._lock:
            self._faults.append(Fault(path_prefix, status, retry_after, times, delay_s, body))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def calls(self, path_prefix: str | None = None) -> int:
        with self._lock:
            return sum(
                1 for _, path, _ in self.requests if path_prefix is None or path.startswith(path_prefix)
            )

    def reset_calls(self) -> None:
        with self._lock:
            self.requests.clear()

    def issued_tokens(self) -> list[str]:
        """Every access and refresh token handed out (for tests that scan logs for them)."""
        with self._lock:
            return list(self._issued)

    # ---- HTTP ---------------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _serve(self, method: str) -> None:
                parsed = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(parsed.query, keep_blank_values=True).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                try:
                    status, payload, headers = fake._dispatch(method, parsed.path, query, body, self.headers)
                except _Reply as reply:
                    status, payload, headers = reply.status, reply.body, reply.headers
                if isinstance(payload, (dict, list)):
                    data = json.dumps(payload).encode()
                    headers = {"Content-Type": "application/json; charset=utf-8", **headers}
                else:
                    data = (payload or "").encode()
                    if data:
                        headers = {"Content-Type": "text/plain; charset=utf-8", **headers}
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

        return Handler

    def _dispatch(
        self, method: str, path: str, query: dict[str, str], body: bytes, headers: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if path.startswith("/_fake/"):
            return self._control(method, path, body)
        with self._lock:
            self.requests.append((method, path, dict(query)))
            fault = next((f for f in self._faults if f.times > 0 and path.startswith(f.path_prefix)), None)
            if fault is not None:
                fault.times -= 1
        if fault is not None:
            if fault.delay_s:
                time.sleep(fault.delay_s)
            if fault.status is not None:
                extra = {"Retry-After": str(int(fault.retry_after))} if fault.retry_after is not None else {}
                payload = fault.body
                if payload is None:
                    payload = {"error": {"status": fault.status, "message": "injected fault"}}
                return fault.status, payload, extra
        if method == "GET" and path == "/authorize":
            return self._authorize(query)
        if method == "POST" and path == "/api/token":
            return self._token(body, headers)
        if method == "GET" and path.startswith("/v1/"):
            user = self._bearer(headers)
            return 200, self._web_api(user, path[3:], query), {}
        raise _api_error(404, "Service not found")

    # ---- accounts -----------------------------------------------------------------------------
    def _authorize(self, q: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        if q.get("client_id") != self.client_id:
            raise _Reply(400, "INVALID_CLIENT: Invalid client")
        if q.get("response_type") != "code":
            raise _Reply(400, "unsupported_response_type")
        redirect_uri = q.get("redirect_uri") or ""
        if not redirect_uri.startswith(("https://", "http://127.0.0.1", "http://[::1]")):
            raise _Reply(400, "INVALID_CLIENT: Invalid redirect URI")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            raise _Reply(400, "code_challenge and code_challenge_method=S256 are required")
        state = q.get("state")
        with self._lock:
            deny, self._deny_next = self._deny_next, False
            user = q.get("fake_user") or self._login_as or next(iter(self.world.users), None)
        params: dict[str, str] = {}
        if deny:
            params["error"] = "access_denied"
        elif user is None or user not in self.world.users:
            raise _Reply(400, "no such fake user")
        else:
            code = secrets.token_urlsafe(48)
            with self._lock:
                self._codes[code] = _Code(
                    self.client_id, redirect_uri, q["code_challenge"], user, time.time() + CODE_TTL_S
                )
            params["code"] = code
        if state is not None:
            params["state"] = state
        sep = "&" if "?" in redirect_uri else "?"
        return 302, "", {"Location": f"{redirect_uri}{sep}{urlencode(params)}"}

    def _client(self, form: dict[str, str], headers: Any) -> None:
        auth = headers.get("Authorization") or ""
        if auth.startswith("Basic "):
            try:
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                raise _oauth_error("invalid_client", "Invalid client", 400) from None
            if client_id != self.client_id or secret != self.client_secret:
                raise _oauth_error("invalid_client", "Invalid client secret", 400)
        elif form.get("client_id") != self.client_id:
            raise _oauth_error("invalid_client", "Invalid client", 400)

    def _token(self, body: bytes, headers: Any) -> tuple[int, Any, dict[str, str]]:
        form = {k: v[-1] for k, v in parse_qs(body.decode(errors="replace")).items()}
        self._client(form, headers)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            with self._lock:
                code = self._codes.pop(form.get("code", ""), None)
            if code is None or code.expires_at < time.time():
                raise _oauth_error("invalid_grant", "Invalid authorization code")
            if form.get("redirect_uri") != code.redirect_uri:
                raise _oauth_error("invalid_grant", "Invalid redirect URI")
            verifier = form.get("code_verifier", "")
            if not _VERIFIER.fullmatch(verifier):
                raise _oauth_error("invalid_request", "code_verifier malformed")
            digest = (
                base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            )
            if digest != code.challenge:
                raise _oauth_error("invalid_grant", "code_verifier was incorrect")
            return 200, self._issue(code.user, refresh=True), {}
        if grant == "refresh_token":
            token = form.get("refresh_token", "")
            with self._lock:
                user = self._refresh.get(token)
                if user is None:
                    raise _oauth_error("invalid_grant", "Refresh token revoked")
                if self.rotate_refresh_tokens:
                    del self._refresh[token]
            return 200, self._issue(user, refresh=self.rotate_refresh_tokens), {}
        if grant == "client_credentials":
            if not (headers.get("Authorization") or "").startswith("Basic "):
                raise _oauth_error("invalid_client", "client credentials need the client secret")
            return 200, self._issue(None, refresh=False), {}
        raise _oauth_error("unsupported_grant_type", "unsupported grant_type")

    def _issue(self, user: str | None, *, refresh: bool) -> dict[str, Any]:
        access = "BQ" + secrets.token_urlsafe(60)
        out: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "scope": "user-read-recently-played user-top-read",
            "expires_in": self.access_token_ttl_s,
        }
        with self._lock:
            self._access[access] = (user, time.time() + self.access_token_ttl_s)
            self._issued.append(access)
            if refresh and user is not None:
                token = "AQ" + secrets.token_urlsafe(90)
                self._refresh[token] = user
                self._issued.append(token)
                out["refresh_token"] = token
        return out

    def _bearer(self, headers: Any) -> str | None:
        auth = headers.get("Authorization") or ""
        if not auth.startswith("Bearer "):
            raise _api_error(401, "No token provided")
        with self._lock:
            entry = self._access.get(auth[7:])
        if entry is None:
            raise _api_error(401, "Invalid access token")
        if entry[1] < time.time():
            raise _api_error(401, "The access token expired")
        return entry[0]

    # ---- Web API ------------------------------------------------------------------------------
    def _web_api(self, user: str | None, path: str, q: dict[str, str]) -> Any:
        w = self.world
        with w.lock:
            if path.startswith("/me"):
                if user is None:
                    raise _api_error(401, "This endpoint needs a user's token")
                if path == "/me":
                    return w.me(user)
                if path == "/me/player/recently-played":
                    return self._recently_played(user, q)
                if path in ("/me/top/tracks", "/me/top/artists"):
                    return self._top(user, path.rsplit("/", 1)[1], q)
                raise _api_error(404, "Service not found")
            parts = path.strip("/").split("/")
            if len(parts) == 1 and parts[0] in _BATCH_MAX:
                return self._batch(parts[0], q)
            if len(parts) == 2 and parts[0] in _BATCH_MAX:
                kind, ident = parts
                if not _ID.fullmatch(ident):
                    raise _api_error(400, "Invalid base62 id")
                table = {"tracks": w.tracks, "artists": w.artists, "albums": w.albums}[kind]
                if ident not in table:
                    raise _api_error(404, "Resource not found")
                return {"tracks": w.track, "artists": w.artist, "albums": w.album}[kind](ident)
        raise _api_error(404, "Service not found")

    @staticmethod
    def _limit(q: dict[str, str], default: int, top: int) -> int:
        try:
            limit = int(q.get("limit", default))
        except ValueError:
            raise _api_error(400, "Invalid limit") from None
        if not 1 <= limit <= top:
            raise _api_error(400, "Invalid limit")
        return limit

    def _recently_played(self, user: str, q: dict[str, str]) -> dict[str, Any]:
        limit = self._limit(q, 20, 50)
        if "after" in q and "before" in q:
            raise _api_error(400, "Only one of after and before may be given")
        try:
            after = int(q["after"]) if "after" in q else None
            before = int(q["before"]) if "before" in q else None
        except ValueError:
            raise _api_error(400, "after and before are unix milliseconds") from None
        now = datetime.now(UTC)
        visible = [p for p in self.world.plays.get(user, []) if p[0] <= now][-RECENT_LIMIT:]

        def ms(ts: datetime) -> int:
            return int(ts.timestamp() * 1000)

        if after is not None:
            chosen = [p for p in visible if ms(p[0]) > after][-limit:]
        elif before is not None:
            chosen = [p for p in visible if ms(p[0]) < before][-limit:]
        else:
            chosen = visible[-limit:]
        chosen.reverse()  # newest first
        items = [
            {"track": self.world.track(track), "played_at": _iso_ms(at), "context": self.world.context(track)}
            for at, track in chosen
        ]
        cursors = {"after": str(ms(chosen[0][0])), "before": str(ms(chosen[-1][0]))} if chosen else None
        base = f"{self.api_url}/me/player/recently-played"
        return {
            "href": f"{base}?{urlencode(q)}",
            "limit": limit,
            # like Spotify: a next link whenever the page has items, even if the next page is empty
            "next": f"{base}?{urlencode({'before': cursors['before'], 'limit': limit})}" if cursors else None,
            "cursors": cursors,
            "items": items,
        }

    def _top(self, user: str, kind: str, q: dict[str, str]) -> dict[str, Any]:
        term = q.get("time_range", "medium_term")
        if term not in TIME_RANGES:
            raise _api_error(400, "Invalid time range")
        limit = self._limit(q, 20, 50)
        try:
            offset = int(q.get("offset", 0))
        except ValueError:
            raise _api_error(400, "Invalid offset") from None
        ids = self.world.tops.get((user, kind, term), [])
        render = self.world.track if kind == "tracks" else self.world.artist
        page = ids[offset : offset + limit]
        base = f"{self.api_url}/me/top/{kind}"

        def link(off: int) -> str:
            return f"{base}?{urlencode({'time_range': term, 'limit': limit, 'offset': off})}"

        return {
            "href": link(offset),
            "limit": limit,
            "offset": offset,
            "total": len(ids),
            "next": link(offset + limit) if offset + limit < len(ids) else None,
            "previous": link(max(0, offset - limit)) if offset > 0 else None,
            "items": [render(i) for i in page],
        }

    def _batch(self, kind: str, q: dict[str, str]) -> dict[str, Any]:
        if not self.batch_reads:
            raise _api_error(403, "This endpoint is not available to apps in Development Mode")
        ids = [i for i in (q.get("ids") or "").split(",") if i]
        if not ids or len(ids) > _BATCH_MAX[kind]:
            raise _api_error(400, f"ids: between 1 and {_BATCH_MAX[kind]} ids")
        table = {"tracks": self.world.tracks, "artists": self.world.artists, "albums": self.world.albums}[
            kind
        ]
        render = {"tracks": self.world.track, "artists": self.world.artist, "albums": self.world.album}[kind]
        return {kind: [render(i) if i in table else None for i in ids]}

    # ---- control over HTTP --------------------------------------------------------------------
    def _control(self, method: str, path: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            raise _Reply(400, {"error": "body must be JSON"}) from None
        if path == "/_fake/faults" and method == "POST":
            self.inject(
                data["path_prefix"],
                data.get("status", 500),
                retry_after=data.get("retry_after"),
                times=int(data.get("times", 1)),
                delay_s=float(data.get("delay_s", 0)),
                body=data.get("body"),
            )
        elif path == "/_fake/faults" and method == "DELETE":
            self.clear_faults()
        elif path == "/_fake/login-as" and method == "POST":
            self.login_as(data["user"])
        elif path == "/_fake/revoke" and method == "POST":
            self.revoke(data["user"])
        elif path == "/_fake/plays" and method == "POST":
            for play in data.get("plays", []):
                at = datetime.fromisoformat(play["played_at"].replace("Z", "+00:00"))
                self.world.add_play(data["user"], play["track_id"], at)
        else:
            raise _Reply(404, {"error": "no such control route"})
        return 200, {"ok": True}, {}
