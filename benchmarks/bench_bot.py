"""Bot benchmark through the fake Bot API server (real HTTP, real engine, warm models).

1. One user, 20 photos one after another: latency from the update being handed to the bot
   (getUpdates) to the first album sent, p50/p95.
2. 20 users at once, 5 photos each (each user sends the next photo once the previous is answered,
   as the bot serves one photo per user at a time): all 100 must be answered; throughput, p50/p95.

Run: .venv/bin/python benchmarks/bench_bot.py   (about a minute plus indexing the sample gallery)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bot.app import build_application, running  # noqa: E402
from bot.settings import Settings  # noqa: E402
from engine import Engine  # noqa: E402
from fake_bot_api import TOKEN, FakeBotAPI  # noqa: E402
from helpers_engine import CLEAR_FACES, SAMPLE_GALLERY  # noqa: E402

from bot_helpers import person_photo  # noqa: E402

ALBUM_METHODS = ("sendMediaGroup", "sendPhoto")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def one_photo(api: FakeBotAPI, user: int, data: bytes, timeout: float = 120) -> float:
    """Send one photo as `user`; wait for the summary; return update-served → first-album seconds."""
    since = len(api.calls)
    update_id = api.send_photo(user, data)
    await api.wait_for_text(user, "likely", since=since, timeout=timeout)
    first_album = next(c for c in api.calls[since:] if c.chat_id == user and c.method in ALBUM_METHODS)
    return first_album.at - api.served_at[update_id]


async def main(args) -> None:
    photos = [person_photo(person) for person in CLEAR_FACES]
    with tempfile.TemporaryDirectory(prefix="bench-bot-") as tmp:
        async with FakeBotAPI() as api:
            settings = Settings(
                bot_token=TOKEN, bot_api_url=api.url, data_dir=Path(tmp), gallery_dir=SAMPLE_GALLERY,
                database_url=f"sqlite:///{tmp}/bot.sqlite3", workers=args.workers,
            )  # fmt: skip
            engine = Engine(settings)
            started = time.perf_counter()
            async with running(build_application(settings, engine=engine)):
                print(f"start-up (migrations, models, index of {SAMPLE_GALLERY.name}, warm-up): "
                      f"{time.perf_counter() - started:.1f} s; workers={settings.workers}, k={settings.default_k}")  # fmt: skip

                single = [await one_photo(api, 1, photos[n % len(photos)]) for n in range(args.single)]
                print(f"single user, {len(single)} photos: p50 {statistics.median(single) * 1000:.0f} ms, "
                      f"p95 {percentile(single, 95) * 1000:.0f} ms (update received -> first album sent)")  # fmt: skip

                async def user_session(user: int) -> list[float]:
                    return [await one_photo(api, user, photos[(user + n) % len(photos)], timeout=300) for n in range(args.per_user)]

                started = time.perf_counter()
                results = await asyncio.gather(*(user_session(100 + u) for u in range(args.users)), return_exceptions=True)
                wall = time.perf_counter() - started
                latencies = [value for result in results if isinstance(result, list) for value in result]
                failures = [result for result in results if isinstance(result, BaseException)]
                expected = args.users * args.per_user
                print(f"{args.users} users x {args.per_user} photos: {len(latencies)}/{expected} answered, "
                      f"{len(failures)} users with lost photos; {len(latencies) / wall:.2f} photos/s over {wall:.1f} s; "
                      f"p50 {statistics.median(latencies) * 1000:.0f} ms, p95 {percentile(latencies, 95) * 1000:.0f} ms")  # fmt: skip
                errors = [c for c in api.calls if "something went wrong" in c.text or "still working" in c.text]
                print(f"error / 'still working' replies: {len(errors)}")
                if failures or len(latencies) != expected:
                    raise SystemExit(f"lost photos: {failures[:3]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--per-user", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parser.parse_args()))
