"""Staff authentication: argon2 password hashes (pwdlib), signed tokens (PyJWT, HS256)
and a per-email limit on failed logins.

A token carries the staff id, role and name and expires after ``token_ttl_s``; the API
still reads the staff row on every request, so a person removed from the database (or
given another role) is refused or re-ruled at once, not when the token runs out.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

import jwt
from pwdlib import PasswordHash

ALGORITHM = "HS256"
ISSUER = "dealerline-dashboard"
MIN_PASSWORD_CHARS = 10

_hasher = PasswordHash.recommended()  # argon2id with pwdlib's current parameters
# Verified when the email is unknown, so that answer takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("dealerline-dashboard-no-such-account")


class InvalidToken(Exception):
    """The token is missing, expired, forged or malformed."""


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    return _hasher.hash(password)


async def verify_password(password: str, password_hash: str | None) -> bool:
    """Check ``password`` off the event loop (argon2 is deliberately slow); with no hash
    the dummy one is checked so that "no such account" costs the same time."""

    def check() -> bool:
        try:
            ok = _hasher.verify(password, password_hash or _DUMMY_HASH)
        except Exception:  # a malformed stored hash is a failed login, not a 500
            return False
        return ok and password_hash is not None

    return await asyncio.to_thread(check)


@dataclass(frozen=True)
class TokenClaims:
    staff_id: int
    role: str
    name: str
    issued_at: float
    expires_at: float


class TokenIssuer:
    def __init__(self, secret: str, ttl_s: float) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    def issue(self, staff_id: int, role: str, name: str, now: float | None = None) -> TokenClaims:
        issued = int(now if now is not None else time.time())
        return TokenClaims(staff_id, role, name, issued, issued + int(self.ttl_s))

    def encode(self, claims: TokenClaims) -> str:
        return jwt.encode(
            {
                "sub": str(claims.staff_id),
                "role": claims.role,
                "name": claims.name,
                "iat": int(claims.issued_at),
                "exp": int(claims.expires_at),
                "iss": ISSUER,
            },
            self._secret,
            algorithm=ALGORITHM,
        )

    def decode(self, token: str | None) -> TokenClaims:
        if not token:
            raise InvalidToken("no token")
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["sub", "exp", "iat", "iss"]},
            )
            return TokenClaims(
                staff_id=int(payload["sub"]),
                role=str(payload.get("role", "")),
                name=str(payload.get("name", "")),
                issued_at=float(payload["iat"]),
                expires_at=float(payload["exp"]),
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise InvalidToken(str(exc)) from None


class LoginLimiter:
    """At most ``max_failures`` failed logins per email within ``window_s``; further
    attempts are refused (429) until the oldest failure leaves the window. Per process:
    behind several replicas the effective limit is ``max_failures`` × replicas."""

    def __init__(self, max_failures: int, window_s: float, max_tracked: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_tracked = max_tracked
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, email: str, now: float | None = None) -> float | None:
        """Seconds until ``email`` may try again, or None if it may now."""
        now = now if now is not None else time.monotonic()
        times = self._recent(email, now)
        if times is None or len(times) < self.max_failures:
            return None
        return max(1.0, times[0] + self.window_s - now)

    def failed(self, email: str, now: float | None = None) -> None:
        now = now if now is not None else time.monotonic()
        if email not in self._failures and len(self._failures) >= self.max_tracked:
            for key in list(self._failures)[: self.max_tracked // 10 or 1]:
                self._recent(key, now)
            if len(self._failures) >= self.max_tracked:  # all still recent: drop the oldest
                self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(email, deque()).append(now)

    def succeeded(self, email: str) -> None:
        self._failures.pop(email, None)
