"""Bot settings: the engine's settings plus Telegram, access, database and reply options."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
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
        description="User ids allowed to use the bot (admins always are); `*` admits anyone. Empty: the bot "
        "refuses to start, so that a forgotten setting does not open face identification to everyone.",
    )
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

    @field_validator("history_retention_days", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
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
        if user_id is None:
            return False
        if self.allowed_user_ids == "*":
            return True
        return user_id in self.allowed_user_ids or user_id in self.admin_ids

    def access_problem(self) -> str | None:
        """Why the bot must not start with these access settings, or None."""
        if self.allowed_user_ids == "*" or self.allowed_user_ids:
            return None
        return (
            "ALLOWED_USER_IDS is empty: the bot would identify faces for anyone who finds it, so it does not start. "
            "Set ALLOWED_USER_IDS to the Telegram user ids who may use it (admins always may), or to * to admit "
            "anyone on purpose."
        )
