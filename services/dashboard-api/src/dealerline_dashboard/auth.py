"""Staff authentication: argon2 password hashes (pwdlib) and signed tokens (PyJWT, HS256);
the login limits are in :mod:`.limits`.

A token carries the staff id, role and name and expires after ``token_ttl_s``; the API
still reads the staff row on every request, so a person removed from the database (or
given another role) is refused or re-ruled at once, not when the token runs out.
"""

from __future__ import annotations

import asyncio
import time
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
