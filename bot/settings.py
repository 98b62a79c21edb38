"""Bot settings: the engine's settings plus Telegram, access, database and reply options."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from engine.settings import EngineSettings, ModelName

TELEGRAM_API_URL = "https://api.telegram.org"


class Settings(EngineSettings):
    """Every field maps to an environment variable of the same name (upper case), or a line of `.env`."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    bot_token: SecretStr | None = Field(
        None,
        description="Bot token from @BotFather (a secret: never logged). Unset: `python -m bot` runs the engine demo.",
    )
    bot_api_url: str = Field(
        TELEGRAM_API_URL, description="Bot API server root (a local telegram-bot-api server, a fake one)."
    )
    webhook_url: str | None = Field(None, description="Public HTTPS URL: set to use a webhook instead of long polling.")
    webhook_listen: str = Field("0.0.0.0", description="Address the webhook server listens on.")
    webhook_port: int = Field(8443, ge=1, le=65535, description="Port the webhook server listens on.")
    webhook_secret: SecretStr | None = Field(
        None,
        description="Secret token Telegram sends with each webhook call (A-Z, a-z, 0-9, _ and -, up to 256). "
        "Unset in webhook mode: one derived from BOT_TOKEN (HMAC-SHA256), the same on every replica.",
    )

    admin_ids: Annotated[frozenset[int], NoDecode] = Field(
        frozenset(), description="User ids allowed /reindex and /stats."
    )
    allowed_user_ids: Annotated[frozenset[int] | Literal["*"], NoDecode] = Field(
        frozenset(),
        description="User ids allowed to use the bot (admins always are); `*` admits anyone; `invite` admits every "
        "user who opened a valid invite link (/invite), alone or with ids (`invite,111,222`). Empty: the bot "
        "refuses to start, so that a forgotten setting does not open face identification to everyone.",
    )
    invite_mode: bool = Field(
        False,
        description="Admit users who opened a valid invite link (/invite). Set by `invite` in ALLOWED_USER_IDS.",
    )
    require_consent: bool | None = Field(
        None,
        description="A user's first photo gets a notice (what is done with a selfie, /forget, OPERATOR_CONTACT) and "
        "an 'I agree' button before anything is searched. Empty: on in invite mode, off otherwise.",
    )
    operator_contact: str | None = Field(
        None,
        description="Who runs the bot (a name, an @username or an e-mail), named in the consent notice.",
    )
    max_persons_per_day: int = Field(
        5,
        ge=0,
        description="Distinct persons a non-admin may look up in 24 hours (rolling); a face of another person past "
        "it is refused, and nothing of that person shown. The same person again, More photos and followed "
        "deliveries do not count. 0: no limit.",
    )
    invite_uses: int = Field(300, ge=1, le=100_000, description="Uses of an /invite link when none are given.")
    invite_days: float = Field(7, gt=0, le=365, description="Days an /invite link lasts when none are given.")
    refusal_interval_s: float = Field(
        3600,
        ge=0,
        description="A user outside ALLOWED_USER_IDS is told (and logged) at most once per this many seconds, per "
        "replica; their other updates are dropped silently. 0: told at every update.",
    )

    database_url: str | None = Field(None, description="SQLAlchemy URL. Default: SQLite file DATA_DIR/bot.sqlite3.")

    default_model: ModelName = Field("facenet", description="Backend a new chat starts with.")
    max_faces: int = Field(5, ge=1, description="Faces searched per photo, largest first.")
    thumbnail_side: int = Field(512, ge=64, description="Longest side of gallery photos sent back (JPEG).")
    thumbnail_cache_size: int = Field(512, ge=0, description="Downscaled gallery photos kept in memory.")
    workers: int = Field(2, ge=1, description="Threads running detection/embedding (the bounded worker pool).")
    progress_interval_s: float = Field(3.0, ge=0.0, description="Least time between two /reindex progress edits.")
    build_missing_index: bool = Field(True, description="At start, build the index of a usable model that has none.")
    watch_gallery: bool = Field(
        False,
        description="Index new, changed and deleted gallery photos as they land (after the start-up build), "
        "each once it has settled (WATCH_SETTLE_S); WATCH_POLL_S for network mounts.",
    )
    history_size: int = Field(10, ge=1, description="Queries listed by /history.")
    history_retention_days: float | None = Field(
        30,
        gt=0,
        description="Delete recorded queries older than this many days (at start and hourly). Empty: keep forever.",
    )
    state_ttl_hours: float = Field(
        48,
        gt=0,
        description="How long an answer's buttons, a /remove confirmation and an album's photos stay usable.",
    )
    originals_max_bytes: int | None = Field(
        None,
        ge=1,
        description='Largest gallery file "Download originals" sends; larger ones are named with their size. '
        "Empty: the Bot API's upload limit, 50 MB with api.telegram.org, 2,000 MB with another BOT_API_URL "
        "(a local Bot API server).",
    )
    max_answer_photos: int = Field(
        30,
        ge=1,
        description="Gallery photos sent in one answer at most (an album of group photos); faces past it are "
        "named in the summary only.",
    )
    max_queue: int = Field(
        8,
        ge=1,
        description="Photos waiting for or in the worker pool; beyond it a photo is answered 'busy' without download.",
    )
    send_retries: int = Field(
        5, ge=0, description="Retries of a Telegram call after a 429 (flood wait) or a network error."
    )
    album_wait_s: float = Field(
        1.0, ge=0.0, description="How long the bot waits for the rest of a user's album (media group)."
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Serve Prometheus /metrics and /healthz on this port (0: any free port). Unset: off.",
    )
    metrics_listen: str = Field(
        "127.0.0.1", description="Address of the metrics server (0.0.0.0: every interface, e.g. for a scraper)."
    )
    follow_ttl_days: float = Field(
        30,
        gt=0,
        description="A follower's face template (/follow) is deleted this many days after they followed (hourly "
        "purge), unless /unfollow or /forget deleted it first.",
    )
    delivery_min_faces: int = Field(
        512,
        ge=0,
        description="Live events: nothing is delivered until the gallery holds this many faces. The photos "
        "decision measures each query's cohort level on its neighbours at ranks 64-128; in a smaller gallery those "
        "ranks reach its lower half, look-alikes pass, and a photo delivered cannot be taken back. Chosen on A-F "
        "with benchmarks/delivery_floor.py: the smallest gallery whose precision reaches 0.95 (128 faces: 0.90). "
        "0: from the first photo.",
    )
    delivery_interval_s: float = Field(
        60,
        ge=0,
        description="At most one batch of albums per follower per this many seconds: a burst of new photos is "
        "delivered together. 0: as soon as they are matched.",
    )
    delivery_claim_s: float = Field(
        30,
        ge=1,
        description="How long a replica's claim on a batch of deliveries holds, renewed before each album it sends: "
        "a batch whose replica died mid-send is sent again after this.",
    )

    @field_validator("history_retention_days", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="before")
    @classmethod
    def _invite_in_allowed(cls, data: object) -> object:
        """`invite` in ALLOWED_USER_IDS (alone or among ids) turns invite mode on; the ids stay ids."""
        if isinstance(data, dict):
            value = data.get("allowed_user_ids")
            if isinstance(value, str):
                parts = [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
                if any(part.lower() == "invite" for part in parts):
                    kept = [part for part in parts if part.lower() != "invite"]
                    data = {**data, "allowed_user_ids": ",".join(kept), "invite_mode": True}
        return data

    @field_validator("require_consent", "operator_contact", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("admin_ids", "allowed_user_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str) and value.strip() == "*":
            return "*"
        if isinstance(value, str):
            return frozenset(int(part) for part in value.replace(";", ",").split(",") if part.strip())
        if isinstance(value, int):
            return frozenset({value})
        return value

    def token(self) -> str:
        return self.bot_token.get_secret_value() if self.bot_token else ""

    @property
    def base_url(self) -> str:
        return self.bot_api_url.rstrip("/") + "/bot"

    @property
    def base_file_url(self) -> str:
        return self.bot_api_url.rstrip("/") + "/file/bot"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'bot.sqlite3').resolve()}"

    def is_admin(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.admin_ids

    def is_allowed(self, user_id: int | None) -> bool:
        """Admitted by the settings alone (admins, listed ids, `*`); invite mode admits more (bot/services/invites.py)."""
        if user_id is None:
            return False
        if self.allowed_user_ids == "*":
            return True
        return user_id in self.allowed_user_ids or user_id in self.admin_ids

    def consent_required(self) -> bool:
        """REQUIRE_CONSENT, or when unset: in invite mode."""
        return self.invite_mode if self.require_consent is None else self.require_consent

    def access_problem(self) -> str | None:
        """Why the bot must not start with these access settings, or None."""
        if self.allowed_user_ids == "*" or self.allowed_user_ids or self.invite_mode:
            return None
        return (
            "ALLOWED_USER_IDS is empty: the bot would identify faces for anyone who finds it, so it does not start. "
            "Set ALLOWED_USER_IDS to the Telegram user ids who may use it (admins always may), or to * to admit "
            "anyone on purpose."
        )
