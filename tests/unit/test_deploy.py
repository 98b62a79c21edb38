"""deploy/compose.yaml and deploy/Caddyfile agree with each other and with the settings the code reads.

No container engine runs here: these tests read the files (PyYAML) and check what would break a deployment
silently: a misspelt variable, a webhook path or port the proxy does not forward, a secret not declared.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from bot.settings import Settings
from engine.backends import MODEL_NAMES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BOTS = ("bot-1", "bot-2")
# Read by something other than Settings: TensorFlow's logging, and (until the Milvus backend's setting lands) the store.
NOT_SETTINGS = {"TF_CPP_MIN_LOG_LEVEL", "VECTOR_STORE_URI"}
DOMAIN = "bot.example.org"


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$`, enough for this file."""

    def replace(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg or ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", replace, value).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def bot_env(compose: dict, service: str) -> dict[str, str]:
    env = {"BOT_DOMAIN": DOMAIN, "ALLOWED_USER_IDS": "111,222"}
    return {k: interpolate(str(v), env) for k, v in compose["services"][service]["environment"].items()}


def test_services_and_their_references(compose):
    services = compose["services"]
    assert {"etcd", "minio", "milvus", "postgres", "indexer", *BOTS, "caddy"} <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"], f"{name} uses undeclared secret {secret}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith(".") or source in compose["volumes"], f"{name}: unknown volume {source}"
        assert "image" in service
    assert services["milvus"]["healthcheck"]["test"][-1] == "http://localhost:9091/healthz"
    assert {p.split(":", 1)[1] for p in services["milvus"]["ports"]} == {"19530:19530", "9091:9091"}
    assert services[BOTS[0]] == services[BOTS[1]]  # replicas of one service
    assert services["indexer"]["command"][:4] == ["python", "-m", "engine", "index"]
    assert interpolate(services["indexer"]["command"][-1], {}) in MODEL_NAMES
    assert "/gallery" in " ".join(services["indexer"]["volumes"])


def test_bot_environment_is_what_settings_reads(compose, monkeypatch):
    env = bot_env(compose, BOTS[0])
    fields = {name.upper() for name in Settings.model_fields}
    assert set(env) - fields <= NOT_SETTINGS, f"not read by Settings: {set(env) - fields - NOT_SETTINGS}"
    for name in list(os.environ):  # only the compose file's values
        if name.lower() in Settings.model_fields:
            monkeypatch.delenv(name)
    monkeypatch.chdir(DEPLOY)  # no .env here
    settings = Settings(**{k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields})
    assert settings.webhook_url == f"https://{DOMAIN}/telegram/webhook"
    assert settings.webhook_port == 8443
    assert settings.build_missing_index is False
    assert settings.admin_ids == frozenset()
    assert str(settings.gallery_dir) == "/gallery"

    command = " ".join(compose["services"][BOTS[0]]["command"])
    for secret in ("bot_token", "webhook_secret", "postgres_password"):
        assert f"/run/secrets/{secret}" in command
    assert "PGPASSWORD=" in command and "WEBHOOK_SECRET=" in command and command.endswith("exec python -m bot")


def test_replicas_share_a_writable_gallery_and_one_edit_lock(compose):
    """`/add`, `/remove` and `/rename` write the gallery; the gallery-edit lock lives in DATA_DIR, one volume for both."""
    env = bot_env(compose, BOTS[0])
    volumes = {volume.split(":")[1]: volume for volume in compose["services"][BOTS[0]]["volumes"]}
    assert volumes[env["GALLERY_DIR"]] == f"gallery:{env['GALLERY_DIR']}"  # not read-only
    data = volumes[env["DATA_DIR"]].split(":")[0]
    assert data in compose["volumes"]  # a named volume, the same for both replicas (they are one definition)
    assert compose["services"][BOTS[0]]["volumes"] == compose["services"][BOTS[1]]["volumes"]
    indexer = {volume.split(":")[1]: volume for volume in compose["services"]["indexer"]["volumes"]}
    assert indexer[env["GALLERY_DIR"]].split(":")[0] == "gallery"


def test_the_allow_list_is_required(compose):
    raw = compose["services"][BOTS[0]]["environment"]["ALLOWED_USER_IDS"]
    with pytest.raises(KeyError):
        interpolate(raw, {})
    assert interpolate(raw, {"ALLOWED_USER_IDS": "*"}) == "*"


def test_database_url_names_the_installed_postgresql_driver(compose):
    url = make_url(bot_env(compose, BOTS[0])["DATABASE_URL"])
    assert (url.get_backend_name(), url.get_driver_name(), url.host, url.password) == (
        "postgresql", "psycopg", "postgres", None,
    )  # fmt: skip
    engine = create_engine(url)  # imports the driver; connects only when used
    assert engine.dialect.driver == "psycopg"
    engine.dispose()
    postgres = compose["services"]["postgres"]["environment"]
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"]) == (url.username, url.database)


def test_caddy_forwards_the_webhook_path_to_both_replicas(compose):
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    env = bot_env(compose, BOTS[0])
    path = env["WEBHOOK_URL"].split(DOMAIN, 1)[1]
    assert f"handle {path} {{" in caddyfile
    upstreams = re.search(r"reverse_proxy ([^{]+)\{", caddyfile).group(1).split()
    assert sorted(upstreams) == [f"{bot}:{env['WEBHOOK_PORT']}" for bot in BOTS]
    assert "{$BOT_DOMAIN}" in caddyfile
    assert compose["services"]["caddy"]["volumes"][0].startswith("./Caddyfile:")
