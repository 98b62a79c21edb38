"""Bot benchmark through the fake Bot API server (real HTTP, real engine, warm models).

1. One user, photos one after another: latency from the update being handed to the bot (getUpdates)
   to the first album sent, p50/p95 -- with the file_id cache off (every gallery photo uploaded, as
   before issue 8) and warm (gallery photos sent by Telegram file_id).
2. Many users at once (20 x 5 and 100 x 3 by default): each user sends the next photo once the
   previous is answered; a "busy, try again" answer (the bounded queue, MAX_QUEUE) is retried after
   a second, like a user would. All photos must end answered; none lost. Reports p50/p95 from the
   accepted photo to its first album, p95 from the first try (retries included), busy answers, and
   the process's peak memory (ru_maxrss: bot, engine and fake server together).

Run: .venv/bin/python benchmarks/bench_bot.py   (a few minutes plus indexing the sample gallery)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bot_helpers import person_photo
from fake_bot_api import TOKEN, FakeBotAPI
from helpers_engine import CLEAR_FACES, SAMPLE_GALLERY

from bot.app import build_application, running
from bot.settings import Settings
from engine import Engine

ALBUM_METHODS = ("sendMediaGroup", "sendPhoto")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def uploaded_bytes(api: FakeBotAPI, since: int) -> int:
    return sum(len(data) for c in api.calls[since:] if c.method in ALBUM_METHODS for data in c.files.values())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def one_photo(api: FakeBotAPI, user: int, data: bytes, timeout: float = 300) -> tuple[float, float, int]:
    """Send one photo as `user` until accepted; returns (accepted update -> first album s, first try -> album s, busy answers)."""
    busy = 0
    first_try = None
    while True:
        since = len(api.calls)
        update_id = api.send_photo(user, data)
        found = await api.wait_for(
            lambda calls, since=since: [
                c for c in calls[since:] if c.chat_id == user and ("likely" in c.text or "busy" in c.text)
            ],
            timeout=timeout,
        )
        first_try = first_try if first_try is not None else api.served_at[update_id]
        if "busy" in found[0].text:
            busy += 1
            await asyncio.sleep(1.0)
            continue
        first_album = next(c for c in api.calls[since:] if c.chat_id == user and c.method in ALBUM_METHODS)
        return first_album.at - api.served_at[update_id], first_album.at - first_try, busy


async def crowd(api: FakeBotAPI, photos: list[bytes], users: int, per_user: int, first_user: int) -> None:
    async def session(user: int) -> list[tuple[float, float, int]]:
        return [await one_photo(api, user, photos[(user + n) % len(photos)]) for n in range(per_user)]

    started = time.perf_counter()
    results = await asyncio.gather(*(session(first_user + u) for u in range(users)), return_exceptions=True)
    wall = time.perf_counter() - started
    done = [value for result in results if isinstance(result, list) for value in result]
    failures = [result for result in results if isinstance(result, BaseException)]
    expected = users * per_user
    accepted = [d[0] for d in done]
    overall = [d[1] for d in done]
    busy = sum(d[2] for d in done)
    print(f"{users} users x {per_user} photos at once: {len(done)}/{expected} answered, {len(failures)} users with lost photos; "
          f"{len(done) / wall:.2f} photos/s over {wall:.1f} s; accepted -> first album p50 {statistics.median(accepted) * 1000:.0f} ms, "
          f"p95 {percentile(accepted, 95) * 1000:.0f} ms; first try -> first album p95 {percentile(overall, 95) * 1000:.0f} ms; "
          f"{busy} 'busy' answers retried; peak memory {peak_rss_mb():.0f} MB")  # fmt: skip
    errors = [c for c in api.calls if "something went wrong" in c.text or "still working" in c.text]
    if errors:
        print(f"  error / 'still working' replies: {len(errors)}")
    if failures or len(done) != expected:
        raise SystemExit(f"lost photos: {failures[:3]}")


async def main(args) -> None:
    photos = [person_photo(person) for person in CLEAR_FACES]
    with tempfile.TemporaryDirectory(prefix="bench-bot-") as tmp:
        async with FakeBotAPI() as api:
            settings = Settings(
                bot_token=TOKEN, bot_api_url=api.url, data_dir=Path(tmp), gallery_dir=SAMPLE_GALLERY,
                database_url=f"sqlite:///{tmp}/bot.sqlite3", workers=args.workers, max_queue=args.max_queue,
                allowed_user_ids="*",
            )  # fmt: skip
            engine = Engine(settings)
            started = time.perf_counter()
            application = build_application(settings, engine=engine)
            service = application.bot_data["service"]
            async with running(application):
                await service.ready.wait()
                print(f"start-up (migrations, models, index of {SAMPLE_GALLERY.name}, warm-up): "
                      f"{time.perf_counter() - started:.1f} s; workers={settings.workers}, k={settings.default_k}, "
                      f"max_queue={settings.max_queue}")  # fmt: skip
                for photo in photos:  # thumbnails rendered and cached, networks warm
                    await one_photo(api, 1, photo)

                cache_size = service.file_ids.size
                service.file_ids.size = 0  # off: every gallery photo uploaded, as before issue 8
                service.file_ids.clear()
                mark = len(api.calls)
                cold = [(await one_photo(api, 1, photos[n % len(photos)]))[0] for n in range(args.single)]
                cold_bytes = uploaded_bytes(api, mark)
                service.file_ids.size = cache_size
                for photo in photos:
                    await one_photo(api, 1, photo)  # fills the file_id cache
                mark = len(api.calls)
                warm = [(await one_photo(api, 1, photos[n % len(photos)]))[0] for n in range(args.single)]
                warm_bytes = uploaded_bytes(api, mark)
                for label, values, sent in (
                    ("file_id cache off (uploads)", cold, cold_bytes),
                    ("file_id cache warm", warm, warm_bytes),
                ):
                    if not values:
                        continue
                    print(f"single user, {len(values)} photos, {label}: p50 {statistics.median(values) * 1000:.0f} ms, "
                          f"p95 {percentile(values, 95) * 1000:.0f} ms (update received -> first album sent); "
                          f"{sent / len(values) / 1024:.0f} KiB of gallery photos uploaded per answer")  # fmt: skip
                print(
                    f"file_id cache: {service.file_ids.hits} hits, {service.file_ids.misses} misses, {len(service.file_ids)} ids"
                )

                first_user = 100
                for spec in args.crowds:
                    users, per_user = (int(part) for part in spec.split("x"))
                    await crowd(api, photos, users, per_user, first_user)
                    first_user += users


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument("--crowds", nargs="*", default=["20x5", "100x3"], help="USERSxPHOTOS, run one after another")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-queue", type=int, default=8)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parser.parse_args()))
