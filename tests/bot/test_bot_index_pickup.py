"""Live pickup: a running bot names a person that another process (`python -m engine index`) has just indexed,
without a restart, through the fake Bot API server."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from support.bot_helpers import USER, person_photo, running_service
from support.fake_bot_api import FakeBotAPI
from support.helpers_engine import FACENET_WEIGHTS, REPO_ROOT, copy_photos, first_photos

KNOWN = ("Ben_Afflek", "Jerry_Seinfeld", "Madonna", "Mindy_Kaling")


async def summary_after(api: FakeBotAPI, since: int) -> str:
    calls = await api.wait_for(
        lambda calls: [
            c
            for c in calls[since:]
            if c.chat_id == USER and ("most likely" in c.text or "not in the gallery (" in c.text)
        ],
        timeout=120,
    )
    return calls[0].text


@pytest.mark.slow
async def test_a_running_bot_names_a_person_another_process_indexed(api, make_engine, tmp_path):
    gallery = tmp_path / "gallery"
    copy_photos(gallery, [photo for person in KNOWN for photo in first_photos(person, 3)])
    engine = make_engine(data_dir=tmp_path / "data", gallery_dir=gallery, index_workers=0)
    engine.build_index("facenet")
    async with running_service(api, engine, tmp_path, index_refresh_s=0.5) as service:
        since = len(api.calls)
        api.send_photo(USER, person_photo("Elton John"))
        assert "not in the gallery" in await summary_after(api, since)

        copy_photos(gallery, first_photos("Elton_John", 4))
        models = tmp_path / "models"
        models.mkdir()
        (models / FACENET_WEIGHTS.name).symlink_to(FACENET_WEIGHTS)
        env = {
            **os.environ,
            "DATA_DIR": str(tmp_path / "data"),
            "MODELS_DIR": str(models),
            "INDEX_WORKERS": "0",
            "PYTHONPATH": str(REPO_ROOT),
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        indexer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine", "index", "--gallery", str(gallery), "--json",
            env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(indexer.communicate(), timeout=300)
        assert indexer.returncode == 0, err.decode()[-2000:]
        finished = time.monotonic()

        while service.engine.index_info("facenet").count < 12 + 4 - 1:  # picked up by the running bot
            assert time.monotonic() - finished < 10, "the running bot did not pick up the new index within 10 s"
            await asyncio.sleep(0.1)
        since = len(api.calls)
        api.send_photo(USER, person_photo("Elton John"))
        assert "most likely Elton John" in await summary_after(api, since)
