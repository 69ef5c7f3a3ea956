"""The per-socket protocol machine, with no I/O (design note 1).

Call `receive(text, now)` for every inbound text frame and `tick(now)` at `next_deadline()`;
after each, `take_actions()` hands over what the I/O layer must do, in order: frames to send,
effects to run (power, command, logs, stats) and at most one close. The outbound filter
`may_receive(permission)` is what fan-out consults for each event.
"""
from __future__ import annotations

import uuid as _uuid
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Union

from . import events
from .envelope import parse
from .permissions import ADMIN_ERRORS, CONTROL_CONSOLE, POWER_PERMISSION, PermissionSet
from .ratelimit import RateLimiter
from .tokens import Claims, DenyList, JwtError, TokenVerifier


@dataclass(frozen=True, slots=True)
class SessionConfig:
    server_uuid: str
    auth_timeout_s: float = 30.0  # spec §1: unauthenticated sockets are closed
    expiring_notice_s: float = 60.0  # spec §3: `token expiring` when this much remains
    expired_grace_s: float = 60.0  # roost: close 4001 when no re-auth after expiry/revocation
    roost_extensions: bool = False  # the client connected with ?roost=1


# ---- actions handed to the I/O layer ------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Send:
    frame: str


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class FirstAuth:
    """Send `status` with the current state, and one `stats` when offline."""


@dataclass(frozen=True, slots=True)
class Power:
    action: str


@dataclass(frozen=True, slots=True)
class Command:
    line: str


@dataclass(frozen=True, slots=True)
class SendLogs:
    since_seq: int | None = None  # roost extension: resume after this sequence number


@dataclass(frozen=True, slots=True)
class SendStats:
    pass


Action = Union[Send, Close, FirstAuth, Power, Command, SendLogs, SendStats]

CLOSE_AUTH = 4001  # roost: token expired/revoked and not renewed, or never authenticated


class Phase(Enum):
    UNAUTHED = "unauthed"
    AUTHED = "authed"
    EXPIRED = "expired"  # `token expired` sent; nothing is delivered until a re-auth
    REVOKED = "revoked"  # denylisted while connected; nothing delivered until a re-auth
    CLOSED = "closed"


Handler = Callable[["Session", str, float], None]
HANDLERS: dict[str, tuple[Handler, str | None]] = {}


def inbound(event: str, *, permission: str | None = None) -> Callable[[Handler], Handler]:
    """Declare the handler of an inbound event where it is defined (design note 4)."""

    def register(fn: Handler) -> Handler:
        HANDLERS[event] = (fn, permission)
        return fn

    return register


class Session:
    def __init__(
        self,
        config: SessionConfig,
        verifier: TokenVerifier,
        denylist: DenyList,
        now: float,
        *,
        new_error_id: Callable[[], str] = lambda: str(_uuid.uuid4()),
    ):
        self.config = config
        self._verifier = verifier
        self._denylist = denylist
        self._limiter = RateLimiter(now)
        self._actions: list[Action] = []
        self._new_error_id = new_error_id
        self.phase = Phase.UNAUTHED
        self.claims: Claims | None = None
        self.permissions = PermissionSet(())
        self._ever_authed = False
        self._auth_deadline: float | None = now + config.auth_timeout_s
        self._expiring_at: float | None = None
        self._expired_at: float | None = None
        self._close_at: float | None = None
        # Error texts the I/O layer should log with their id (the client may see only the id).
        self.logged_errors: list[tuple[str, str]] = []

    # ---- driving --------------------------------------------------------------------------

    def receive(self, text: str, now: float) -> None:
        """Handle one inbound text frame. Steps in fixed order: envelope, rate limit, token,
        permission, handler."""
        if self.phase is Phase.CLOSED:
            return
        env = parse(text)
        if env is None:
            return
        entry = HANDLERS.get(env.event)
        if entry is None:
            return  # unknown inbound events are ignored (spec §2)
        limited = self._limiter.check(env.event, now)
        if limited is not None:
            name, announce = limited
            if announce:
                self._send(events.frame(events.THROTTLED, name))
            return
        handler, permission = entry
        if env.event != events.AUTH:
            reason = self._token_problem(now)
            if reason is not None:
                self._send(events.frame(events.JWT_ERROR, reason))
                return
            if permission is not None and not self.permissions.has(permission):
                return  # dropped silently, as Wings does
        handler(self, env.arg, now)

    def tick(self, now: float) -> None:
        """Fire every deadline that has passed. Call at `next_deadline()`."""
        if self.phase is Phase.CLOSED:
            return
        if self._auth_deadline is not None and now >= self._auth_deadline:
            self._close(CLOSE_AUTH, "authentication timeout")
            return
        if self._expiring_at is not None and now >= self._expiring_at:
            self._expiring_at = None
            if self.phase is Phase.AUTHED:
                self._send(events.frame(events.TOKEN_EXPIRING))
        if self._expired_at is not None and now >= self._expired_at:
            self._expired_at = None
            if self.phase is Phase.AUTHED:
                self._send(events.frame(events.TOKEN_EXPIRED))
                self.phase = Phase.EXPIRED
                self._close_at = now + self.config.expired_grace_s
        if self._close_at is not None and now >= self._close_at:
            self._close(CLOSE_AUTH, "token expired" if self.phase is Phase.EXPIRED else "token revoked")

    def next_deadline(self) -> float | None:
        ds = [d for d in (self._auth_deadline, self._expiring_at, self._expired_at, self._close_at) if d is not None]
        return min(ds) if ds else None

    def take_actions(self) -> list[Action]:
        out, self._actions = self._actions, []
        return out

    def recheck(self, now: float) -> None:
        """Call after the deny list changed: a now-denied token stops all delivery."""
        if self.phase is not Phase.AUTHED or self.claims is None:
            return
        try:
            TokenVerifier.check_live(self.claims, now=now, denylist=self._denylist)
        except JwtError as e:
            if str(e) == events.JWT_DENYLISTED:
                self._send(events.frame(events.JWT_ERROR, str(e)))
                self.phase = Phase.REVOKED
                self._expiring_at = self._expired_at = None
                self._close_at = now + self.config.expired_grace_s

    def is_user(self, user_uuid: str) -> bool:
        return self.claims is not None and self.claims.user_uuid == user_uuid

    # ---- outbound filter ------------------------------------------------------------------

    def may_receive(self, permission: str | None = None) -> bool:
        """Whether an outbound event needing `permission` may be delivered now."""
        if self.phase is not Phase.AUTHED:
            return False
        return permission is None or self.permissions.has(permission)

    def daemon_error(self, text: str) -> None:
        """Queue a `daemon error`; the real text only for `admin.websocket.errors`."""
        error_id = self._new_error_id()
        self.logged_errors.append((error_id, text))
        shown = text if self.permissions.has(ADMIN_ERRORS) else events.GENERIC_ERROR
        self._send(events.frame(events.DAEMON_ERROR, f"Error Event [{error_id}]: {shown}"))

    def public_error(self, text: str) -> None:
        """A `daemon error` whose text everyone may see (e.g. the busy power lock)."""
        error_id = self._new_error_id()
        self._send(events.frame(events.DAEMON_ERROR, f"Error Event [{error_id}]: {text}"))

    # ---- internals ------------------------------------------------------------------------

    def _send(self, frame: str) -> None:
        self._actions.append(Send(frame))

    def _close(self, code: int, reason: str) -> None:
        self.phase = Phase.CLOSED
        self._auth_deadline = self._expiring_at = self._expired_at = self._close_at = None
        self._actions.append(Close(code, reason))

    def _token_problem(self, now: float) -> str | None:
        if self.phase is Phase.UNAUTHED or self.claims is None:
            return events.JWT_NO_JWT
        if self.phase is Phase.EXPIRED:
            return events.JWT_EXPIRED
        if self.phase is Phase.REVOKED:
            return events.JWT_DENYLISTED
        try:
            TokenVerifier.check_live(self.claims, now=now, denylist=self._denylist)
        except JwtError as e:
            return str(e)
        return None

    def _authenticate(self, token: str, now: float) -> None:
        try:
            claims = self._verifier.verify(
                token, server_uuid=self.config.server_uuid, now=now, denylist=self._denylist
            )
        except JwtError as e:
            self._send(events.frame(events.JWT_ERROR, str(e)))
            return
        first = not self._ever_authed
        self._ever_authed = True
        self.claims = claims
        self.permissions = claims.permissions
        self.phase = Phase.AUTHED
        self._auth_deadline = None
        self._close_at = None
        self._expiring_at = max(now, claims.exp - self.config.expiring_notice_s)
        self._expired_at = claims.exp
        self._send(events.frame(events.AUTH_SUCCESS))
        if first:
            self._actions.append(FirstAuth())
        # A token that is already inside its notice window gets `token expiring` at once.
        self.tick(now)


# ---- the inbound table ----------------------------------------------------------------------

@inbound(events.AUTH)
def _on_auth(session: Session, arg: str, now: float) -> None:
    session._authenticate(arg, now)


@inbound(events.SET_STATE)
def _on_set_state(session: Session, arg: str, now: float) -> None:
    permission = POWER_PERMISSION.get(arg)
    if permission is None:
        session.daemon_error(f"invalid power action provided: {arg!r}")
        return
    if not session.permissions.has(permission):
        return
    session._actions.append(Power(arg))


@inbound(events.SEND_COMMAND, permission=CONTROL_CONSOLE)
def _on_send_command(session: Session, arg: str, now: float) -> None:
    session._actions.append(Command(arg))


@inbound(events.SEND_LOGS)
def _on_send_logs(session: Session, arg: str, now: float) -> None:
    since: int | None = None
    if session.config.roost_extensions and arg.strip().isdigit():
        since = int(arg.strip())
    session._actions.append(SendLogs(since))


@inbound(events.SEND_STATS)
def _on_send_stats(session: Session, arg: str, now: float) -> None:
    session._actions.append(SendStats())
