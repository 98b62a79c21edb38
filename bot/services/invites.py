"""Invite links and consent (issue 22): `/invite [uses] [days]` (a t.me deep link and its QR code), `/invites`,
`/revoke CODE`; who is admitted in invite mode (ALLOWED_USER_IDS=invite: admins, listed ids, users admitted by a
link, stored, cached per replica); `/start CODE` admitting; consent before the first search (a notice with an
"I agree" button; the photo is searched once agreed); the admins' audit lines in /stats.

The photo waiting for agreement is kept as its Telegram file_id in the button's state (shared by the replicas,
expiring with STATE_TTL_HOURS, deleted by /forget), never as the photo itself; pressed after that, the user is asked
to send it again.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import segno
from cachetools import TTLCache
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.invites import REFUSAL, SEARCH, Admitted, InviteInfo, InviteStore
from bot.queries import PhotoIn
from bot.runtime import BotRuntime

log = logging.getLogger(__name__)

MAX_INVITE_USES = 100_000
MAX_INVITE_DAYS = 365
ADMITTED_CACHE_S = 600  # an admission seen in the database is trusted this long by this replica (admissions stay)
ADMITTED_CACHE_USERS = 100_000
CONSENT_TEXT_VERSION = 1  # bump when the notice below says something else
FOLLOW = "follow"  # a follow consent (bot/follow_store.py) covers being searched: following searches the selfie
QR_PIXELS = 800  # the QR code's side, about: sharp when printed on a table card

NOT_ALLOWED = "Sorry, this bot is private: you are not on its list of users."
ASK_ORGANISER = "Sorry, this bot is for the guests of an event: please ask the organiser for the invite link."
INVALID = "This invite is no longer valid. Please ask the organiser for a new link."
WELCOME = "Welcome! You're in: send me a selfie and I'll find the photos you appear in. /help explains more."
ALREADY_IN = "You're already in: send me a selfie. /help explains more."
AGREE_EXPIRED = "This button has expired: please send your photo again."


@dataclass(frozen=True)
class InviteMade:
    """An /invite answer: the link, its QR code (PNG) and the caption; or `refusal` (bad arguments)."""

    link: str = ""
    png: bytes = b""
    caption: str = ""
    refusal: str | None = None


def invite_usage(uses: int, days: float) -> str:
    return (
        f"Usage: /invite [uses] [days] — uses a whole number from 1 to {MAX_INVITE_USES:,}, days from 1 to "
        f"{MAX_INVITE_DAYS} (default: {uses} uses, {days:g} days)."
    )


def parse_invite_args(args: list[str], default_uses: int, default_days: float) -> tuple[int, float] | str:
    """(uses, days), or the answer that says what is wrong."""
    if len(args) > 2 or not all(arg.isascii() and arg.isdigit() for arg in args):
        return invite_usage(default_uses, default_days)
    uses = int(args[0]) if args else default_uses
    days = float(args[1]) if len(args) > 1 else default_days
    if not 1 <= uses <= MAX_INVITE_USES:
        return f"An invite admits from 1 to {MAX_INVITE_USES:,} users. " + invite_usage(default_uses, default_days)
    if not 1 <= days <= MAX_INVITE_DAYS:
        return f"An invite lasts from 1 to {MAX_INVITE_DAYS} days. " + invite_usage(default_uses, default_days)
    return uses, days


def qr_png(link: str) -> bytes:
    """The link as a QR code PNG, black on white with the standard quiet zone, about QR_PIXELS wide."""
    code = segno.make(link, error="m", micro=False)
    width, _ = code.symbol_size(scale=1, border=4)
    out = io.BytesIO()
    code.save(out, kind="png", scale=max(4, QR_PIXELS // width), border=4)
    return out.getvalue()


def start_payload(message: Message | None) -> str | None:
    """The payload of a `/start PAYLOAD` message (a deep link), or None."""
    if message is None or not message.text:
        return None
    command, _, payload = message.text.partition(" ")
    if command.split("@", 1)[0] != "/start" or not payload.strip():
        return None
    return payload.strip()


def _when(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC"


class InviteService:
    """Over the runtime; `search(chat_id, user_id, photos)` is the search flow, run once the user agreed."""

    def __init__(self, runtime: BotRuntime, search: Callable[[int, int, list[PhotoIn]], Coroutine[Any, Any, None]]):
        self.rt = runtime
        self.search = search
        self._admitted: TTLCache[int, bool] = TTLCache(maxsize=ADMITTED_CACHE_USERS, ttl=ADMITTED_CACHE_S)
        self._store: InviteStore | None = None

    @property
    def store(self) -> InviteStore:
        if self._store is None:
            self._store = InviteStore(self.rt.store)
        return self._store

    # ---- who is admitted ------------------------------------------------------------------------

    async def admits(self, user_id: int) -> bool:
        """The settings admit the user (admins, listed ids, `*`), or invite mode and a stored admission."""
        rt = self.rt
        if rt.settings.is_allowed(user_id):
            return True
        if not rt.settings.invite_mode:
            return False
        if user_id in self._admitted:
            return True
        if await rt.db(self.store.is_admitted, user_id):
            self._admitted[user_id] = True
            return True
        return False

    def lets_through(self, message: Message | None) -> bool:
        """A `/start CODE` from a user not admitted yet goes on to the invite handler (invite mode only)."""
        return self.rt.settings.invite_mode and start_payload(message) is not None

    def refusal_text(self) -> str:
        return ASK_ORGANISER if self.rt.settings.invite_mode else NOT_ALLOWED

    async def refused(self, told: bool) -> None:
        """Count a refused update (metrics); one told, in the audit too (at most one per user per REFUSAL_INTERVAL_S)."""
        rt = self.rt
        rt.metrics.refusals.labels(reason="no_invite" if rt.settings.invite_mode else "not_allowed").inc()
        if told:
            await self._audit_refusal()

    async def _audit_refusal(self) -> None:
        try:
            await self.rt.db(self.store.count, REFUSAL)
        except Exception:
            log.exception("could not count a refusal for the audit")

    async def start(self, user_id: int, payload: str) -> str | None:
        """`/start CODE`: the answer; None when the user needs no invite (the usual /start answer then)."""
        rt = self.rt
        if rt.settings.is_allowed(user_id) or not rt.settings.invite_mode:
            return None
        if await self.admits(user_id):
            return ALREADY_IN
        outcome = await rt.db(self.store.admit, user_id, payload)
        if outcome is Admitted.INVALID:
            rt.metrics.refusals.labels(reason="invalid_invite").inc()
            log.info("user %s opened an invite that admits nobody (%d characters)", user_id, len(payload))
            await self._audit_refusal()
            return INVALID
        self._admitted[user_id] = True
        if outcome is Admitted.ALREADY:
            return ALREADY_IN
        rt.metrics.admissions.inc()
        log.info("user %s admitted by an invite link", user_id)
        return WELCOME

    # ---- /invite, /invites, /revoke ---------------------------------------------------------------

    async def make(self, admin_id: int, args: list[str]) -> InviteMade:
        """/invite [uses] [days]: a new code, its deep link and QR code."""
        rt, s = self.rt, self.rt.settings
        parsed = parse_invite_args(args, s.invite_uses, s.invite_days)
        if isinstance(parsed, str):
            return InviteMade(refusal=parsed)
        uses, days = parsed
        made = await rt.db(self.store.create, admin_id, uses, days)
        link = f"https://t.me/{rt.sender.bot.username}?start={made.code}"
        png = await rt.db(qr_png, link)
        lines = [
            f"Invite link: {link}",
            f"It admits {uses} {'user' if uses == 1 else 'users'} until {_when(made.expires_at)}. Print the QR code "
            "on the signage and table cards. /invites lists the live links; /revoke CODE ends one.",
        ]
        if not s.invite_mode:
            lines.append("Note: ALLOWED_USER_IDS does not contain `invite`: this link admits nobody until it does.")
        log.info("admin %s made an invite (%d uses, %g days)", admin_id, uses, days)
        return InviteMade(link=link, png=png, caption="\n".join(lines))

    async def send_invite(self, chat_id: int, made: InviteMade) -> None:
        await self.rt.sender.photo(chat_id, made.png, made.caption)

    async def live_lines(self) -> str:
        """/invites: the live codes (their first characters only), uses left and expiry."""
        live: list[InviteInfo] = await self.rt.db(self.store.live)
        if not live:
            return "No live invite links. /invite [uses] [days] makes one."
        lines = [f"{len(live)} live invite {'link' if len(live) == 1 else 'links'}:"]
        lines += [f"• {i.prefix}… — {i.uses_left} of {i.uses} uses left, until {_when(i.expires_at)}" for i in live]
        lines.append("/revoke CODE ends one (its first characters, as shown, are enough).")
        return "\n".join(lines)

    async def revoke(self, args: list[str]) -> str:
        """/revoke CODE (whole, or the first characters /invites shows)."""
        code = " ".join(args).strip().rstrip("…")
        if not code or " " in code or len(code) > 64:
            return "Usage: /revoke CODE — the invite's code, or its first characters as /invites shows them."
        result = await self.rt.db(self.store.revoke, code)
        if result.revoked:
            log.info("an invite (%s…) was revoked", code[:6])
            return f"Revoked the invite {code[:6]}…: it admits nobody from now on (users it admitted stay in)."
        if result.ambiguous:
            return f"{result.ambiguous} live invites start with {code!r}: send more of the code."
        return "No live invite link matches that code (/invites lists them)."

    # ---- consent before the first search -------------------------------------------------------------

    def consent_notice(self) -> str:
        contact = self.rt.settings.operator_contact
        runner = f"This bot is run by {contact}." if contact else "This bot is run by the event's organiser."
        return (
            "Before I search your photo:\n"
            "• I look for the faces in it and answer with the event's photos of that person.\n"
            "• Your photo is not kept: only a record of the search (when, and who was found) stays in your /history, "
            "and nothing of your face is kept unless you /follow.\n"
            "• /forget deletes your history and this agreement at any time.\n"
            f"{runner}\n"
            "Press “I agree” and I'll search the photo you sent."
        )

    async def consent_needed(self, chat_id: int, user_id: int, photos: list[PhotoIn]) -> bool:
        """True when the photos wait for the user's agreement (the notice was sent); False: search them now."""
        rt = self.rt
        if not rt.settings.consent_required() or rt.settings.is_admin(user_id):
            return False
        if await rt.db(self.store.has_consent, user_id, (SEARCH, FOLLOW)):
            return False
        payload = {"photos": [asdict(photo) for photo in photos]}
        token = await rt.db(rt.state.put_button, "agree", chat_id, user_id, payload)
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("I agree", callback_data=f"agree:{token}")]])
        await rt.sender.text(chat_id, self.consent_notice(), reply_markup=keyboard)
        return True

    async def agree(self, token: str, user_id: int) -> str | None:
        """ "I agree": the consent recorded with its time, then the waiting photo searched (in the background).
        Returns a note for the button (None: done)."""
        rt = self.rt
        button = await rt.db(rt.state.button, token, "agree")
        if button is None:
            return AGREE_EXPIRED
        if button.user_id != user_id:
            return "This button is for the person who sent the photo."
        if not await rt.db(rt.state.claim, f"agree:{token}"):
            return "Already agreed."
        await rt.db(self.store.record_consent, user_id, CONSENT_TEXT_VERSION)
        log.info("user %s agreed to be searched", user_id)
        photos = [PhotoIn(**photo) for photo in button.payload.get("photos", [])]
        if photos:
            rt.spawn(self.search(button.chat_id, user_id, photos))
        return None

    # ---- audit ---------------------------------------------------------------------------------------

    async def audit_lines(self) -> list[str]:
        """/stats: admissions, searches and refusals per day, last 7 days. Counts only, never who."""
        days = await self.rt.db(self.store.audit, 7)
        lines = ["Last 7 days (UTC): admitted · searches · refused"]
        lines += [f"• {d.day:%m-%d}: {d.admissions} · {d.searches} · {d.refusals}" for d in days]
        return lines
