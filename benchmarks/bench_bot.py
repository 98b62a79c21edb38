"""Bot benchmark through the fake Bot API server (real HTTP, real engine, warm models).

1. One user, photos one after another: latency from the update being handed to the bot (getUpdates)
   to the first album sent, p50/p95 -- with the file_id cache off (every gallery photo uploaded, as
   before issue 8) and warm (gallery photos sent by Telegram file_id).
2. Many users at once (20 x 5 and 100 x 3 by default): each user sends the next photo once the
   previous is answered; a "busy, try again" answer (the bounded queue, MAX_QUEUE) is retried after
   a second, like a user would. All photos must end answered; none lost. Reports p50/p95 from the
   accepted photo to its first album, p95 from the first try (retries included), busy answers, and
   the process's peak memory (ru_maxrss: bot, engine and fake server together).

3. `--replicas`: two bot processes (`python -m bot`, as deployed) on one PostgreSQL database (pgserver) and one
   vector store, sharing the fake Bot API; users (100 x 3 by default) alternate between the replicas, and each
   answer's "More matches" is pressed on the other replica. Reports every photo and press answered, p50/p95 from
   the update handed to a replica to its first album, and each replica's peak memory (VmHWM).

Run: .venv/bin/python benchmarks/bench_bot.py   (a few minutes plus indexing the sample gallery)
     .venv/bin/python benchmarks/bench_bot.py --replicas [--users 100 --per-user 3]
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

# imported after the sys.path lines above (the repo, and tests/ for its `support` helpers) and TF_CPP_MIN_LOG_LEVEL
from bot.app import build_application, running  # noqa: E402
from bot.settings import Settings  # noqa: E402
from engine import Engine  # noqa: E402
from support.bot_helpers import person_photo  # noqa: E402
from support.fake_bot_api import TOKEN, FakeBotAPI  # noqa: E402
from support.helpers_engine import CLEAR_FACES, SAMPLE_GALLERY  # noqa: E402

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


async def replicas(args) -> None:
    """Two `python -m bot` processes behind one PostgreSQL and one store; presses on the other replica."""
    from processes.test_bot_replicas import Replica
    from support.postgres_server import fresh_database, running_server

    photos = [person_photo(person) for person in CLEAR_FACES]
    with (
        tempfile.TemporaryDirectory(prefix="bench-bot-replicas-") as tmp,
        running_server() as server,
        fresh_database(server) as url,
    ):
        data = Path(tmp) / "data"
        started = time.perf_counter()
        indexer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine", "--data-dir", str(data), "index", "--gallery", str(SAMPLE_GALLERY),
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        if await indexer.wait():
            raise SystemExit("indexing the sample gallery failed")
        print(f"index of {SAMPLE_GALLERY.name} (one store for both replicas): {time.perf_counter() - started:.0f} s")
        shared = {"gallery": SAMPLE_GALLERY, "data": data, "database_url": url}
        async with FakeBotAPI() as api:
            bots = {name: Replica(name, api, shared, Path(tmp)) for name in ("a", "b")}
            try:
                started = time.perf_counter()
                await asyncio.gather(*(bot.start() for bot in bots.values()))
                print(f"two replicas started and healthy: {time.perf_counter() - started:.0f} s")
                latencies: list[float] = []
                pressed = {"a": 0, "b": 0}
                refused = 0

                async def user(number: int) -> None:
                    nonlocal refused
                    home, other = ("a", "b") if number % 2 else ("b", "a")
                    for n in range(args.per_user):
                        while True:
                            since = len(api.calls)
                            api.target = home
                            update_id = api.send_photo(number, photos[(number + n) % len(photos)])
                            found = await api.wait_for(
                                lambda calls, since=since: [
                                    c for c in calls[since:]
                                    if c.chat_id == number and ("likely" in c.text or "busy" in c.text)
                                ],
                                timeout=600,
                            )  # fmt: skip
                            if "busy" not in found[0].text:
                                break
                            await asyncio.sleep(1.0)
                        first = next(c for c in api.calls[since:] if c.chat_id == number and c.method in ALBUM_METHODS)
                        latencies.append(first.at - api.served_at[update_id])
                        summary = next(c for c in found if "likely" in c.text)
                        while "More matches" in str(summary.params.get("reply_markup")):
                            mark = len(api.calls)
                            api.target = other
                            pressed_id = api.press(number, summary, "More matches")
                            query = next(u["callback_query"]["id"] for u in api.updates if u["update_id"] == pressed_id)
                            page = await api.wait_for(
                                lambda calls, mark=mark, query=query: [
                                    c for c in calls[mark:]
                                    if (c.chat_id == number and c.text.startswith("Matches"))
                                    or (c.params.get("callback_query_id") == query and c.params.get("text"))
                                ],
                                timeout=600,
                            )  # fmt: skip
                            if page[0].method != "answerCallbackQuery":
                                pressed[page[0].replica] += 1
                                break
                            refused += 1  # busy (that replica's queue, or this user's search): pressed again
                            await asyncio.sleep(1.0)

                started = time.perf_counter()
                await asyncio.gather(*(user(1000 + n) for n in range(args.users)))
                elapsed = time.perf_counter() - started
                peaks = {}
                for name, bot in bots.items():
                    status = Path(f"/proc/{bot.process.pid}/status").read_text() if bot.process else ""
                    peaks[name] = next((int(line.split()[1]) / 1024 for line in status.splitlines()
                                        if line.startswith("VmHWM")), float("nan"))  # fmt: skip
            finally:
                await asyncio.gather(*(bot.stop() for bot in bots.values()))
    print(f"{args.users} users x {args.per_user} photos on two replicas: {len(latencies)} answered in {elapsed:.0f} s; "
          f"photo -> first album p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"p95 {percentile(latencies, 95) * 1000:.0f} ms; More matches answered on the other replica: "
          f"{pressed['a']} by a, {pressed['b']} by b ({refused} presses refused as busy and pressed again); peak memory a {peaks['a']:.0f} MB, b {peaks['b']:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument("--crowds", nargs="*", default=["20x5", "100x3"], help="USERSxPHOTOS, run one after another")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-queue", type=int, default=8)
    parser.add_argument("--replicas", action="store_true", help="two bot processes on one PostgreSQL (3. above)")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--per-user", type=int, default=3)
    logging.basicConfig(level=logging.WARNING)
    arguments = parser.parse_args()
    asyncio.run(replicas(arguments) if arguments.replicas else main(arguments))
