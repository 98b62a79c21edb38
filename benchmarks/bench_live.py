"""A live event: photos land in a watched gallery while guests who followed by selfie receive theirs (issue 21).

The event is built as benchmarks/bench_event.py builds it (its `plan`: guests, strangers, fillers of one fold of
LFW development people), but at camera size: 4000x3000 (12 Mpx) canvases, faces 112-325 px (bench_event's 45-130 px
scaled with the canvas). The plan's group photos are followed by regroupings of the same pasted photos (new
canvases, places and sizes) until there are enough photos for the run. Photos are cached under
DATA_DIR/bench/live/<fold>-g<guests>-s<strangers>-seed<seed>/photos/ (reruns reuse them).

A run (in this process: the fake Bot API; a real `python -m bot` process with WATCH_GALLERY=true against it):
  1. the bot starts on a small gallery (--initial photos) and indexes it;
  2. --guests guests and --strangers strangers follow by selfie (/follow, "I agree"), --follow-window at a time;
  3. steady: --steady photos written into the gallery, one every --period s, alternately to the final name in
     chunks (an FTP upload, --write-mbps) and to a temporary name then renamed (a sync tool); midway the bot is
     killed (SIGKILL) and restarted on the same database; at three quarters --unfollow guests send /unfollow;
  4. burst: --burst photos copied at once;
  5. the run waits until every photo is indexed and deliveries have stopped, stops the bot, and searches each
     guest's selfie on the bot's index with the engine (the photos answer a search gives).
Prints, each figure labelled:
  - latency from a photo's last byte written to the album (sendMediaGroup/sendPhoto) that carries it arriving,
    per (photo, follower pasted in it): p50, p95, max, steady and burst; the burst's last delivery against its
    indexing time (first byte copied to the last photo in the index's file records);
  - per guest, the delivered set against the truth (the photos they were pasted in): precision and recall, and
    the recall of a search with the same selfie at the end; strangers who got any photo; duplicate deliveries;
    deliveries after /unfollow; deliveries lost or repeated across the kill;
  - the bot's peak memory (VmHWM of the bot process; the sampled peak RSS of its process tree);
  - with --default-interval (DELIVERY_INTERVAL_S=60): batches closer than a minute to the same follower;
  - the cost of matching 1,000 new faces against 1k/10k/100k followers' templates (--cost-sizes).
Needs ../shared/data/lfw (says so and exits 0 without it).
Usage: python benchmarks/bench_live.py [--guests 100 --strangers 100 --steady 60 --burst 500] [--default-interval]
       [--env KEY=VALUE ...] [--cost-only] [--no-cost] [--self-check]
Quick: python benchmarks/bench_live.py --guests 10 --strangers 10 --steady 10 --burst 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402

from bench_event import FOLDS, LFW, LFW_FACE, SCENES, plan  # noqa: E402
from engine.settings import EngineSettings  # noqa: E402
from tests.support.compose import background, paste_faces  # noqa: E402
from tests.support.fake_bot_api import TOKEN, Call, FakeBotAPI  # noqa: E402

CAMERA = (4000, 3000)  # a 12 Mpx camera photo
CAMERA_FACES = (112, 325)  # bench_event's 45-130 px faces on 1600 px canvases, scaled to 4000 px
GUEST_IDS, STRANGER_IDS, ADMIN_ID = 100_000, 200_000, 1
PATH = re.compile(r"[\w.\-]+(?:/[\w.\-]+)*\.(?:jpe?g|png)", re.IGNORECASE)
START_TIMEOUT = 600.0
BATCH_GAP_S = 10.0  # album calls to one chat closer than this are one batch


# ---- the event ---------------------------------------------------------------------------------------------------


@dataclass
class Event:
    guests: dict[str, str]  # name -> selfie path
    strangers: dict[str, str]
    photos: list[str]  # relative paths, in the order the run writes them
    truth: dict[str, list[str]]  # relative path -> names pasted in it
    folder: Path  # where the photos are staged

    def people_in(self, relative: str) -> set[str]:
        return set(self.truth[relative])


def regroup(appearances: list[tuple[str, str]], rng: random.Random) -> list[list[tuple[str, str]]]:
    """The appearances shuffled into group photos of 3-8 people, one face per person a photo (as `plan` groups)."""
    pending = list(appearances)
    rng.shuffle(pending)
    photos: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    size = rng.randint(3, 8)
    for name, photo in pending:
        if any(name == other for other, _ in current):
            if len(pending) < 2 * len(appearances):
                pending.append((name, photo))
            continue
        current.append((name, photo))
        if len(current) == size:
            photos.append(current)
            current, size = [], rng.randint(3, 8)
    if current:
        photos.append(current)
    return photos


def camera_plan(layout: dict, count: int, seed: int) -> list[list[tuple[str, str]]]:
    """`count` group photos: the plan's own, then regroupings of the same appearances (prefix-stable in `count`)."""
    photos = [list(map(tuple, members)) for members in layout["photos"]]
    appearances = [tuple(a) for members in layout["photos"] for a in members]
    round_ = 1
    while len(photos) < count and appearances:
        photos += regroup(appearances, random.Random(seed * 1000 + round_))
        round_ += 1
    return photos[:count]


def relative_name(number: int) -> str:
    return f"day-{number % 3 + 1}/{SCENES[number % len(SCENES)]}/IMG_{number:04d}.jpg"


def build_event(work: Path, fold: str, guests: int, strangers: int, seed: int, count: int) -> Event:
    """The event's first `count` camera-sized photos, drawn once and kept in work/photos (truth in work/truth.json)."""
    from PIL import Image

    layout = plan(fold, guests, strangers, seed)
    members_of = camera_plan(layout, count, seed)
    folder = work / "photos"
    manifest = work / "truth.json"
    known: dict[str, list[str]] = json.loads(manifest.read_text()) if manifest.is_file() else {}
    truth: dict[str, list[str]] = {}
    drawn = 0
    started = time.perf_counter()
    for number, members in enumerate(members_of):
        relative = relative_name(number)
        target = folder / relative
        if relative in known and target.is_file():
            truth[relative] = known[relative]
            continue
        rng = random.Random(seed * 7919 + number)
        sources = [np.asarray(Image.open(photo).convert("RGB")) for _, photo in members]
        canvas = background(sources[0], CAMERA, seed + number)
        faces = [(name, image, LFW_FACE, rng.randint(*CAMERA_FACES)) for (name, _), image in zip(members, sources)]
        placed = paste_faces(canvas, faces, seed + number)
        truth[relative] = [p.label for p in placed]
        target.parent.mkdir(parents=True, exist_ok=True)
        canvas.save(target, quality=92)
        drawn += 1
        if drawn % 25 == 0:
            print(f"  drawn {drawn} camera photos ({time.perf_counter() - started:.0f} s)", flush=True)
            manifest.write_text(json.dumps({**known, **truth}))
    manifest.write_text(json.dumps({**known, **truth}))
    photos = [relative_name(n) for n in range(len(members_of))]
    return Event(layout["guests"], layout["strangers"], photos, truth, folder)


# ---- writing into the watched gallery ------------------------------------------------------------------------------


def write_chunked(source: Path, target: Path, mbps: float, chunk: int = 256 * 1024) -> float:
    """Write `source` to its final name in chunks at `mbps` MB/s (an FTP upload); returns when the last byte was
    written (time.monotonic)."""
    data = source.read_bytes()
    target.parent.mkdir(parents=True, exist_ok=True)
    pause = chunk / (mbps * 1e6) if mbps > 0 else 0.0
    with target.open("wb") as out:
        for start in range(0, len(data), chunk):
            out.write(data[start : start + chunk])
            out.flush()
            if pause and start + chunk < len(data):
                time.sleep(pause)
    return time.monotonic()


def write_renamed(source: Path, target: Path, mbps: float = 0.0) -> float:
    """Write `source` to a hidden temporary name beside the target, then rename it (a sync tool); returns when the
    rename was done (time.monotonic)."""
    temporary = target.with_name(f".{target.name}.part")
    write_chunked(source, temporary, mbps)
    os.replace(temporary, target)
    return time.monotonic()


# ---- what the fake Bot API recorded ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    user: int
    path: str
    at: float  # time.monotonic() when the album call reached the fake API
    call: int  # index of the call in api.calls (an album's photos share it)


def buttons(call: Call) -> list[tuple[str, str]]:
    """(text, callback data) of the inline buttons under the message `call` sent."""
    markup = call.params.get("reply_markup") or {}
    if isinstance(markup, str):
        try:
            markup = json.loads(markup)
        except ValueError:
            return []
    return [(b.get("text", ""), b.get("callback_data", "")) for row in markup.get("inline_keyboard", []) for b in row]


def captions_of(call: Call) -> list[str]:
    if call.method == "sendMediaGroup":
        return [str(item.get("caption") or "") for item in call.params.get("media") or []]
    return [call.text]


def deliveries_in(calls: Iterable[Call], users: set[int], known: set[str], first: int = 0) -> list[Delivery]:
    """Every gallery photo sent to a follower's chat (albums and single photos; the paths their captions name)."""
    found = []
    for number, call in enumerate(calls, start=first):
        if call.method not in ("sendMediaGroup", "sendPhoto") or call.chat_id not in users:
            continue
        for caption in captions_of(call):
            paths = [p for p in PATH.findall(caption) if p in known]
            if paths:
                found.append(Delivery(int(call.chat_id), paths[0], call.at, number))
    return found


# ---- figures -------------------------------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    if not values:
        return "n/a (none)"
    a = np.asarray(values)
    return f"p50 {np.percentile(a, 50):.1f} s  p95 {np.percentile(a, 95):.1f} s  max {a.max():.1f} s  (n={len(a)})"


def first_deliveries(deliveries: list[Delivery]) -> dict[tuple[int, str], Delivery]:
    first: dict[tuple[int, str], Delivery] = {}
    for d in sorted(deliveries, key=lambda d: d.at):
        first.setdefault((d.user, d.path), d)
    return first


def latencies(
    deliveries: list[Delivery], written: dict[str, float], should: dict[str, set[int]]
) -> tuple[list[float], int]:
    """Seconds from each written photo's last byte to its first delivery, per (photo, follower who should get it);
    and how many such pairs got none."""
    first = first_deliveries(deliveries)
    values, missing = [], 0
    for path, done in written.items():
        for user in should.get(path, set()):
            got = first.get((user, path))
            if got is None:
                missing += 1
            else:
                values.append(got.at - done)
    return values, missing


def repeats(deliveries: list[Delivery]) -> int:
    """Sends beyond the first of each (user, path)."""
    return sum(n - 1 for n in Counter((d.user, d.path) for d in deliveries).values() if n > 1)


def batch_starts(deliveries: list[Delivery], gap: float = BATCH_GAP_S) -> dict[int, list[float]]:
    """Per user, when each batch began: album calls to one chat less than `gap` apart are one batch."""
    calls: dict[int, list[float]] = defaultdict(list)
    for d in deliveries:
        calls[d.user].append(d.at)
    starts: dict[int, list[float]] = {}
    for user, times in calls.items():
        times = sorted(set(times))
        starts[user] = [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] >= gap]
    return starts


def interval_check(starts: dict[int, list[float]], interval: float, tolerance: float = 1.0) -> tuple[float, int]:
    """(the shortest time between two batches to one follower, how many are closer than `interval`)."""
    gaps = [b - a for times in starts.values() for a, b in zip(times, times[1:])]
    return (min(gaps) if gaps else float("inf")), sum(g < interval - tolerance for g in gaps)


@dataclass
class GuestFigures:
    precision: float  # mean over guests who got any photo
    recall: float  # mean over guests pasted in any written photo
    search_precision: float
    search_recall: float
    guests_judged: int
    differ: int  # (guest, photo) pairs delivered but not answered by the search, or the reverse


def guest_figures(
    delivered: dict[int, set[str]], searched: dict[int, set[str]], truth: dict[int, set[str]]
) -> GuestFigures:
    def precision(got: dict[int, set[str]]) -> float:
        values = [len(got[u] & truth[u]) / len(got[u]) for u in truth if got.get(u)]
        return float(np.mean(values)) if values else float("nan")

    def recall(got: dict[int, set[str]]) -> float:
        values = [len(got.get(u, set()) & truth[u]) / len(truth[u]) for u in truth if truth[u]]
        return float(np.mean(values)) if values else float("nan")

    differ = sum(len(delivered.get(u, set()) ^ searched.get(u, set())) for u in truth)
    judged = sum(1 for u in truth if truth[u])
    return GuestFigures(precision(delivered), recall(delivered), precision(searched), recall(searched), judged, differ)


def self_check() -> None:
    """The figures above on synthetic data (no models, no bot)."""
    d = [Delivery(1, "a.jpg", 10.0, 0), Delivery(1, "b.jpg", 10.0, 0), Delivery(1, "a.jpg", 30.0, 3),
         Delivery(2, "a.jpg", 12.0, 1), Delivery(2, "c.jpg", 75.0, 5)]  # fmt: skip
    assert repeats(d) == 1
    values, missing = latencies(d, {"a.jpg": 9.0, "b.jpg": 9.5}, {"a.jpg": {1, 2, 3}, "b.jpg": {1}})
    assert sorted(values) == [0.5, 1.0, 3.0] and missing == 1, (values, missing)
    starts = batch_starts(d)
    assert starts == {1: [10.0, 30.0], 2: [12.0, 75.0]}, starts
    assert interval_check(starts, 60) == (20.0, 1)
    figures = guest_figures(
        {1: {"a", "b"}, 2: {"a"}}, {1: {"a", "b", "c"}, 2: {"a"}}, {1: {"a", "c"}, 2: {"a"}, 3: set()}
    )
    assert figures.precision == 0.75 and figures.recall == 0.75 and figures.search_recall == 1.0, figures
    assert figures.guests_judged == 2 and figures.differ == 1
    call = Call("sendMediaGroup", {"chat_id": 1, "media": [{"caption": "Face 1 · 1/3 · day-1/x/IMG_0001.jpg · 0.8"},
                                                            {"caption": "2/3 · day-2/y/IMG_0002.jpg"}]}, {}, 5.0)  # fmt: skip
    got = deliveries_in([call], {1}, {"day-1/x/IMG_0001.jpg", "day-2/y/IMG_0002.jpg"})
    assert [x.path for x in got] == ["day-1/x/IMG_0001.jpg", "day-2/y/IMG_0002.jpg"], got
    assert regroup([("a", "1"), ("a", "2"), ("b", "3")], random.Random(0))
    print("self-check: ok")


# ---- the bot process, its index and its memory -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class BotProcess:
    """`python -m bot` against the fake Bot API, with its log in `log`."""

    def __init__(self, api: FakeBotAPI, env: dict[str, str], log: Path):
        self.api, self.env, self.log = api, env, log
        self.process: asyncio.subprocess.Process | None = None
        self.metrics_port = free_port()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None

    async def start(self) -> float:
        """Start it; returns the seconds until it answered (setMyCommands) and /healthz said 200."""
        import aiohttp

        started = time.monotonic()
        since = len(self.api.calls)
        env = {**self.env, "METRICS_PORT": str(self.metrics_port)}
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", cwd=self.log.parent, env=env, stdout=out, stderr=out
            )
        try:
            await self.api.wait_for(
                lambda calls: any(c.method == "setMyCommands" for c in calls[since:]), timeout=START_TIMEOUT
            )
        except AssertionError:
            raise SystemExit(f"the bot did not start; its log:\n{self.log.read_text()[-4000:]}") from None
        async with aiohttp.ClientSession() as http:
            while time.monotonic() - started < START_TIMEOUT:
                try:
                    async with http.get(f"http://127.0.0.1:{self.metrics_port}/healthz") as response:
                        if response.status == 200:
                            return time.monotonic() - started
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.5)
        raise SystemExit(f"the bot was not healthy after {START_TIMEOUT} s; its log:\n{self.log.read_text()[-4000:]}")

    async def kill(self) -> list[int]:
        """SIGKILL the bot (its children are left as a crash leaves them); returns the children still alive 10 s
        later (then killed)."""
        import psutil

        assert self.process is not None
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        _, alive = await asyncio.to_thread(psutil.wait_procs, children, 10)
        for child in alive:  # our own descendants, by id
            child.kill()
        return [child.pid for child in alive]

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=120)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()


class Sampler(threading.Thread):
    """Every `every` s: the bot's VmHWM (peak resident memory of the bot process) and the RSS of its process tree."""

    def __init__(self, bot: BotProcess, every: float = 0.5):
        super().__init__(daemon=True)
        self.bot, self.every = bot, every
        self.stopping = threading.Event()
        self.hwm_mb = 0.0  # the bot process's own peak (VmHWM), over every bot process of the run
        self.tree_mb = 0.0  # the largest sampled sum of RSS over the bot and its children
        self.children_mb = 0.0  # the largest sampled RSS of one child process
        self.started = time.monotonic()
        self.rises: list[tuple[float, float]] = []  # (s since the start, VmHWM MB) each time the peak rose 10 MB

    def run(self) -> None:
        import psutil

        while not self.stopping.wait(self.every):
            pid = self.bot.pid
            if pid is None:
                continue
            try:
                main = psutil.Process(pid)
                status = Path(f"/proc/{pid}/status").read_text()
                hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")), 0)
                if hwm / 1024 >= (self.rises[-1][1] if self.rises else 0.0) + 10:
                    self.rises.append((time.monotonic() - self.started, hwm / 1024))
                self.hwm_mb = max(self.hwm_mb, hwm / 1024)
                total = main.memory_info().rss
                for child in main.children(recursive=True):
                    try:
                        rss = child.memory_info().rss
                    except psutil.Error:
                        continue
                    total += rss
                    self.children_mb = max(self.children_mb, rss / 2**20)
                self.tree_mb = max(self.tree_mb, total / 2**20)
            except (psutil.Error, OSError):
                continue


class IndexWatch(threading.Thread):
    """When each gallery photo first shows in the index's file records (polled every `every` s)."""

    def __init__(self, settings: EngineSettings, every: float = 0.5):
        super().__init__(daemon=True)
        self.settings, self.every = settings, every
        self.stopping = threading.Event()
        self.seen: dict[str, float] = {}
        self.errors: dict[str, str] = {}

    def run(self) -> None:
        from engine.core import Engine

        store = None
        while not self.stopping.wait(self.every):
            try:
                if store is None:
                    store = Engine(self.settings).searcher("facenet").store
                files = store.files()
            except Exception:  # noqa: BLE001 - not there yet, or being rewritten: look again
                store = None
                continue
            now = time.monotonic()
            for path, record in files.items():
                self.seen.setdefault(path, now)
                if record.error:
                    self.errors[path] = record.error


# ---- the run -------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    event: Event
    api: FakeBotAPI
    gallery: Path
    users: dict[int, tuple[str, str, str]]  # user id -> (guest|stranger, name, selfie path)
    written: dict[str, float] = field(default_factory=dict)  # relative path -> last byte written (monotonic)
    write_kind: dict[str, str] = field(default_factory=dict)
    followed_at: dict[int, float] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)  # user -> what the bot answered their selfie
    unfollowed: dict[int, tuple[float, float]] = field(default_factory=dict)  # user -> (sent, answered)
    kill: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _scanned: int = 0
    deliveries: list[Delivery] = field(default_factory=list)

    def scan(self) -> list[Delivery]:
        """The deliveries recorded since the last scan, added to `deliveries`."""
        calls = self.api.calls
        new = deliveries_in(calls[self._scanned :], set(self.users), set(self.event.truth), self._scanned)
        self._scanned = len(calls)
        self.deliveries += new
        return self.deliveries

    def write(self, relative: str, kind: str, mbps: float) -> None:
        source, target = self.event.folder / relative, self.gallery / relative
        done = (write_chunked if kind == "chunked" else write_renamed)(source, target, mbps)
        self.written[relative], self.write_kind[relative] = done, kind

    def should(self, photos: Iterable[str]) -> dict[str, set[int]]:
        """Photo -> the followers pasted in it (following when it was written)."""
        guest_of = {n: u for u, (kind, n, _) in self.users.items() if kind == "guest" and u in self.followed_at}
        out = {}
        for path in photos:
            users = {guest_of[n] for n in self.event.people_in(path) if n in guest_of}
            out[path] = {u for u in users if u not in self.unfollowed or self.unfollowed[u][0] > self.written[path]}
        return out


def consent_button(call: Call) -> str | None:
    return next((t for t, d in buttons(call) if d.startswith("consent:") or t.startswith("I agree")), None)


async def follow_all(run: Run, window: int, timeout: float) -> None:
    """Each user sends their selfie captioned /follow and presses "I agree"; at most `window` selfies unanswered.
    "Which one is you?" (a selfie with background faces) is answered as a guest would: the selfie again, captioned
    /follow 1 (faces are numbered by prominence; the end search takes the most prominent one too). A "busy" answer
    is retried; any other answer without the button is a refusal (recorded, the user does not follow)."""
    api = run.api
    pending = list(run.users)
    waiting: dict[int, int] = {}  # user -> index of api.calls when their selfie (or press) went
    pressed: set[int] = set()
    caption: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while pending or waiting:
        if time.monotonic() > deadline:
            lines = [f"  {u}: " + "; ".join(f"{c.method} {c.text[:80]!r}" for c in api.calls_to(u)) for u in waiting]
            raise RuntimeError("follow timed out; users still waiting:\n" + "\n".join(lines[:10]))
        while pending and len(waiting) < window:
            user = pending.pop(0)
            waiting[user] = len(api.calls)
            api.send_photo(user, Path(run.users[user][2]).read_bytes(), caption=caption.get(user, "/follow"))
        progressed = False
        for user, since in list(waiting.items()):
            call = next((c for c in api.calls[since:] if c.chat_id == user and c.method != "answerCallbackQuery"), None)
            if call is None:
                continue
            progressed = True
            label = consent_button(call)
            if user not in pressed and label is not None:
                pressed.add(user)
                waiting[user] = len(api.calls)
                api.press(user, call, label)
            elif user in pressed:
                del waiting[user]
                run.followed_at[user] = call.at
            elif "busy" in call.text.lower():
                del waiting[user]
                pending.append(user)
            elif "which one is you" in call.text.lower() and user not in caption:
                del waiting[user]
                caption[user] = "/follow 1"
                pending.insert(0, user)
            elif call.method == "sendMessage" and "following this event" in call.text.lower():
                del waiting[user]  # agreed before: following at once
                run.followed_at[user] = call.at
            elif call.method in ("sendMessage", "sendPhoto"):
                del waiting[user]
                run.refused[user] = call.text[:160]
        if not progressed:
            await asyncio.sleep(0.2)  # nothing new for these users: look again
    print(f"  {len(run.followed_at)} users following; {len(run.refused)} refused", flush=True)
    for user, text in sorted(run.refused.items()):
        print(f"    {run.users[user][0]} {run.users[user][1]} refused: {text!r}")


async def wait_indexed(watch: IndexWatch, paths: Iterable[str], timeout: float) -> bool:
    wanted = set(paths)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wanted <= set(watch.seen):
            return True
        await asyncio.sleep(0.5)
    return False


async def wait_quiet(run: Run, quiet: float, timeout: float) -> None:
    """Until no delivery has arrived for `quiet` s (or `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deliveries = run.scan()
        last = max((d.at for d in deliveries), default=0.0)
        if time.monotonic() - last >= quiet:
            return
        await asyncio.sleep(1.0)
    run.notes.append(f"deliveries had not stopped {timeout:.0f} s after the last photo was indexed")


async def unfollow(run: Run, users: list[int]) -> None:
    api = run.api
    for user in users:
        since = len(api.calls)
        sent = time.monotonic()
        api.send_text(user, "/unfollow")
        try:

            def answered(calls: list[Call], s: int = since, u: int = user) -> Call | None:
                return next(
                    (c for c in calls[s:] if c.chat_id == u and c.method in ("sendMessage", "editMessageText")), None
                )

            call = await api.wait_for(answered, timeout=120)
            run.unfollowed[user] = (sent, call.at)
        except AssertionError:
            run.unfollowed[user] = (sent, float("inf"))
            run.notes.append(f"/unfollow of {user} got no answer in 120 s")


async def steady(
    run: Run, photos: list[str], bot: BotProcess, period: float, mbps: float, unfollowers: list[int]
) -> None:
    """One photo every `period` s, the write kinds alternating; the bot killed and restarted midway (the writes go
    on), /unfollow at three quarters."""
    tasks = []
    start = time.monotonic()
    for number, relative in enumerate(photos):
        await asyncio.sleep(max(0.0, start + number * period - time.monotonic()))
        await asyncio.to_thread(run.write, relative, "chunked" if number % 2 == 0 else "renamed", mbps)
        if number == len(photos) // 2 and run.args.kill:
            tasks.append(asyncio.create_task(kill_and_restart(run, bot)))
        if number == (3 * len(photos)) // 4 and unfollowers:
            tasks.append(asyncio.create_task(unfollow(run, unfollowers)))
    await asyncio.gather(*tasks)


async def kill_and_restart(run: Run, bot: BotProcess) -> None:
    run.kill["at"] = time.monotonic()
    run.kill["calls"] = len(run.api.calls)
    run.kill["orphans"] = await bot.kill()
    run.kill["restart_s"] = await bot.start()
    run.kill["ready"] = time.monotonic()
    print(f"  killed the bot (SIGKILL) and restarted it: ready again in {run.kill['restart_s']:.1f} s", flush=True)


async def burst(run: Run, photos: list[str]) -> float:
    """Every photo copied at once (alternately to the final name and through a temporary name); returns the start."""
    started = time.monotonic()

    def copy_all() -> None:
        for number, relative in enumerate(photos):
            run.write(relative, "copied" if number % 2 == 0 else "renamed", 0.0)

    await asyncio.to_thread(copy_all)
    return started


def end_search(settings: EngineSettings, run: Run) -> dict[int, set[str]]:
    """Each guest's selfie searched on the bot's index at the end: the photos answer's paths."""
    from engine.core import Engine

    engine = Engine(settings)
    engine.load_networks("facenet")
    searcher = engine.searcher("facenet")
    params = searcher.appearance_params()
    gallery = settings.resolved_gallery()
    out: dict[int, set[str]] = {}
    for user, (_, _, selfie) in run.users.items():
        _, vectors = searcher.query_vectors([engine.read(Path(selfie))], 1)
        answer = searcher.photos_for(vectors[0], params=params) if len(vectors) else []
        out[user] = {Path(p.path).relative_to(gallery).as_posix() for p in answer}
    engine.close()
    return out


def bot_env(args: argparse.Namespace, api: FakeBotAPI, data: Path, gallery: Path, interval: float) -> dict[str, str]:
    env = {
        **os.environ,
        "BOT_TOKEN": TOKEN, "BOT_API_URL": api.url, "DATA_DIR": str(data), "GALLERY_DIR": str(gallery), "GALLERY_LAYOUT": "photos",
        "MODELS_DIR": str(EngineSettings().models_dir), "ALLOWED_USER_IDS": "*", "ADMIN_IDS": str(ADMIN_ID),
        "WATCH_GALLERY": "true", "DELIVERY_INTERVAL_S": str(interval), "BUILD_MISSING_INDEX": "true",
        "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3",
    }  # fmt: skip
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


async def live(args: argparse.Namespace, event: Event, work: Path) -> dict[str, Any]:
    run_dir = work / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    gallery, data = run_dir / "gallery", run_dir / "data"
    gallery.mkdir(parents=True)
    data.mkdir()
    initial = event.photos[: args.initial]
    steady_photos = event.photos[args.initial : args.initial + args.steady]
    burst_photos = event.photos[args.initial + args.steady : args.initial + args.steady + args.burst]
    for relative in initial:
        (gallery / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(event.folder / relative, gallery / relative)
    users = {GUEST_IDS + i: ("guest", n, p) for i, (n, p) in enumerate(sorted(event.guests.items()))}
    users |= {STRANGER_IDS + i: ("stranger", n, p) for i, (n, p) in enumerate(sorted(event.strangers.items()))}
    interval = 60.0 if args.default_interval else 0.0
    settings = EngineSettings().model_copy(
        update={"data_dir": data, "gallery_dir": gallery, "gallery_layout": "photos"}
    )
    async with FakeBotAPI() as api:
        run = Run(args, event, api, gallery, users)
        started = time.monotonic()
        for relative in initial:
            run.written[relative], run.write_kind[relative] = started, "initial"
        bot = BotProcess(api, bot_env(args, api, data, gallery, interval), run_dir / "bot.log")
        sampler, watch = Sampler(bot), IndexWatch(settings)
        sampler.start()
        try:
            ready_s = await bot.start()
            watch.start()
            if not await wait_indexed(watch, initial, START_TIMEOUT):
                raise SystemExit(f"the initial {len(initial)} photos were not indexed; log: {bot.log}")
            print(
                f"  bot ready in {ready_s:.1f} s, initial {len(initial)} photos indexed after "
                f"{time.monotonic() - started:.1f} s; run folder {run_dir}",
                flush=True,
            )
            t = time.monotonic()
            await follow_all(run, args.follow_window, timeout=60 + 30 * len(users))
            follow_s = time.monotonic() - t
            print(f"  following took {follow_s:.0f} s [t={time.monotonic() - started:.0f} s]", flush=True)

            guests = [u for u, (kind, _, _) in users.items() if kind == "guest"]
            later = set(steady_photos[(3 * len(steady_photos)) // 4 :] + burst_photos)
            in_later = [
                u for u in guests if u in run.followed_at and any(users[u][1] in event.people_in(p) for p in later)
            ]
            unfollowers = in_later[: args.unfollow]

            t = time.monotonic()
            await steady(run, steady_photos, bot, args.period, args.write_mbps, unfollowers)
            steady_indexed = await wait_indexed(watch, steady_photos, 600)
            print(
                f"  steady phase written in {time.monotonic() - t:.0f} s, indexed: {steady_indexed} [t={time.monotonic() - started:.0f} s]",
                flush=True,
            )
            await wait_quiet(run, 15.0 + interval, 300 + interval)

            burst_start = await burst(run, burst_photos)
            print(
                f"  burst of {len(burst_photos)} copied in {time.monotonic() - burst_start:.1f} s [t={time.monotonic() - started:.0f} s]",
                flush=True,
            )
            burst_indexed = await wait_indexed(watch, burst_photos, 60 + 15 * len(burst_photos))
            await wait_quiet(run, 20.0 + interval, 600 + interval)
            deliveries = run.scan()
            await bot.stop()
            figures = report(
                run, deliveries, watch, sampler, steady_photos, burst_photos, burst_start, burst_indexed, interval,
            )  # fmt: skip
            figures["follow_s"] = follow_s
        finally:
            await bot.stop()
            sampler.stopping.set()
            watch.stopping.set()
    searched = await asyncio.to_thread(end_search, settings, run)
    figures |= correctness(run, run.deliveries, searched)
    for note in run.notes:
        print(f"  note: {note}")
    (run_dir / "figures.json").write_text(json.dumps(figures, indent=1, default=str))
    return figures


def report(
    run: Run, deliveries: list[Delivery], watch: IndexWatch, sampler: Sampler, steady_photos: list[str],
    burst_photos: list[str], burst_start: float, burst_indexed: bool, interval: float,
) -> dict[str, Any]:  # fmt: skip
    figures: dict[str, Any] = {}
    print("latency, last byte written -> the album carrying the photo reached the Bot API, per (photo, follower "
          f"pasted in it), DELIVERY_INTERVAL_S={interval:g}:")  # fmt: skip
    for label, photos in (("steady", steady_photos), ("burst", burst_photos)):
        written = {p: run.written[p] for p in photos if p in run.written}
        values, missing = latencies(deliveries, written, run.should(written))
        indexed = [watch.seen[p] - written[p] for p in written if p in watch.seen]
        print(f"  {label}: {spread(values)}; pairs never delivered {missing}")
        print(f"  {label}, last byte -> in the index: {spread(indexed)}")
        figures[label] = {"latency": values, "missing": missing, "index_latency": indexed}
        if label == "steady" and run.kill:
            outside = {p: t for p, t in written.items() if not run.kill["at"] - 30 <= t <= run.kill["ready"] + 30}
            values, _ = latencies(deliveries, outside, run.should(outside))
            print(f"  steady, photos written away from the kill (30 s either side): {spread(values)}")
    if burst_photos:
        indexed_at = max((watch.seen.get(p, float("nan")) for p in burst_photos), default=float("nan"))
        burst_set = set(burst_photos)
        last = max((d.at for d in deliveries if d.path in burst_set), default=float("nan"))
        index_s, last_s = indexed_at - burst_start, last - burst_start
        print(
            f"  burst of {len(burst_photos)}: indexed {index_s:.1f} s after the copy began "
            f"({len(burst_photos) / index_s:.2f} photos/s){'' if burst_indexed else ' (NOT all indexed)'}; "
            f"last delivery at {last_s:.1f} s; goal <= indexing + 60 s: {'met' if last_s <= index_s + 60 else 'MISSED'}"
        )
        figures["burst_index_s"], figures["burst_last_delivery_s"] = index_s, last_s
    if watch.errors:
        print(f"  files the index recorded as unreadable: {len(watch.errors)}, e.g. {list(watch.errors.items())[:3]}")
    starts = batch_starts(deliveries)
    shortest, closer = interval_check(starts, interval or 60.0)
    batches = sum(len(s) for s in starts.values())
    print(
        f"batches: {batches} to {len(starts)} followers; shortest time between two batches to one follower "
        f"{shortest:.1f} s; closer than {interval or 60:g} s: {closer}"
        + (" (the goal: 0)" if interval else " (DELIVERY_INTERVAL_S=0: expected)")
    )
    figures["batches"], figures["batches_closer"], figures["shortest_batch_gap_s"] = batches, closer, shortest
    print(f"memory: the bot process's peak (VmHWM, over its restarts) {sampler.hwm_mb:.0f} MB; "
          f"its process tree, largest sampled RSS sum {sampler.tree_mb:.0f} MB (largest child {sampler.children_mb:.0f} MB)")  # fmt: skip
    print(
        "  the peak rose (s after the first start: MB): " + ", ".join(f"{t:.0f}: {mb:.0f}" for t, mb in sampler.rises)
    )
    figures["peak_mb"], figures["tree_peak_mb"] = sampler.hwm_mb, sampler.tree_mb
    return figures


def correctness(run: Run, deliveries: list[Delivery], searched: dict[int, set[str]]) -> dict[str, Any]:
    written = set(run.written)
    delivered: dict[int, set[str]] = defaultdict(set)
    for d in deliveries:
        delivered[d.user].add(d.path)
    following = [u for u in run.users if u in run.followed_at]
    guests = [u for u in following if run.users[u][0] == "guest" and u not in run.unfollowed]
    strangers = [u for u in following if run.users[u][0] == "stranger"]
    truth = {u: {p for p in written if run.users[u][1] in run.event.people_in(p)} for u in guests}
    g = guest_figures({u: delivered[u] for u in guests}, {u: searched[u] for u in guests}, truth)
    print(f"correctness ({g.guests_judged} following guests pasted in a written photo, {len(run.unfollowed)} who "
          f"unfollowed left out, {len(strangers)} following strangers; {len(run.refused)} users' selfies refused):")  # fmt: skip
    print(f"  delivered: precision {g.precision:.3f}  recall {g.recall:.3f}")
    print(f"  a search with the same selfie at the end: precision {g.search_precision:.3f}  recall {g.search_recall:.3f}"
          f"  (recall difference {g.recall - g.search_recall:+.3f}; goal within 0.01: "
          f"{'met' if abs(g.recall - g.search_recall) <= 0.01 else 'MISSED'})")  # fmt: skip
    print(f"  (guest, photo) pairs delivered but not in the search's answer, or the reverse: {g.differ}")
    wrong = sorted((d.at, d.user, d.path) for d in deliveries if d.user in truth and d.path not in truth[d.user])
    for at, user, path in wrong:  # when each wrong photo went, and how large the gallery was then
        before = sum(1 for t in run.written.values() if t <= at)
        print(f"    wrong: guest {user} got {path} with {before} photos written; the end search answers it: "
              f"{path in searched.get(user, set())}")  # fmt: skip
    answered = [u for u in strangers if delivered[u]]
    share = len(answered) / len(strangers) if strangers else float("nan")
    print(f"  strangers who received any photo: {len(answered)}/{len(strangers)} ({share:.1%}; goal <= 5%)")
    dup = repeats(deliveries)
    print(f"  duplicate deliveries (a (user, photo) sent again): {dup}")
    late = sum(1 for d in deliveries if d.user in run.unfollowed and d.at > run.unfollowed[d.user][1])
    between = sum(1 for d in deliveries if d.user in run.unfollowed and run.unfollowed[d.user][0] < d.at <= run.unfollowed[d.user][1])  # fmt: skip
    print(f"  deliveries after /unfollow was answered: {late} ({len(run.unfollowed)} guests; {between} more while "
          "it was being answered)")  # fmt: skip
    figures = {"precision": g.precision, "recall": g.recall, "search_precision": g.search_precision,
               "search_recall": g.search_recall, "strangers_share": share, "duplicates": dup, "after_unfollow": late}  # fmt: skip
    if run.kill:
        near = {p for p, t in run.written.items() if run.kill["at"] - 30 <= t <= run.kill["ready"] + 30}
        lost = sum(len((searched[u] & near) - delivered[u]) for u in guests)
        repeated = repeats([d for d in deliveries if d.path in near or run.kill["at"] - 5 <= d.at <= run.kill["ready"]])
        print(f"  across the kill ({len(near)} photos written from 30 s before it to 30 s after the restart): "
              f"pairs the final search answers but never delivered {lost}; repeated {repeated}; "
              f"children left running by the kill {len(run.kill['orphans'])}")  # fmt: skip
        figures["kill_lost"], figures["kill_repeated"] = lost, repeated
    return figures


# ---- the cost of matching new faces against followers ------------------------------------------------------------


def face_vectors(work: Path) -> np.ndarray:
    """Real face vectors: those of the last run's index (kept in work/faces.npy)."""
    cache = work / "faces.npy"
    if cache.is_file():
        return np.load(cache)
    from engine.core import Engine

    vectors = []
    for run_dir in sorted(work.glob("run-*"), reverse=True):
        settings = EngineSettings().model_copy(update={"data_dir": run_dir / "data", "gallery_dir": run_dir / "gallery",
                                                       "gallery_layout": "photos"})  # fmt: skip
        try:
            store = Engine(settings).searcher("facenet").store
            vectors = [chunk for _, chunk in store.face_vectors()]
        except Exception:  # noqa: BLE001 - no usable index in this run folder
            continue
        if vectors:
            break
    if not vectors:
        raise SystemExit("no run's index to take face vectors from: run the live part first")
    out = np.concatenate(vectors).astype(np.float32)
    np.save(cache, out)
    return out


def cost_store(work: Path, real: np.ndarray, new_faces: int, rng: np.random.Generator) -> tuple[Any, list[str]]:
    """A copy of the last run's index plus `new_faces` new faces (real face vectors plus a little noise, 5 a photo,
    under new/): the searcher, and the new photos' paths."""
    from engine.core import Engine
    from engine.stores.base import Changes, FaceRow, FileRecord

    runs = sorted((d for d in work.glob("run-*") if (d / "data").is_dir()), reverse=True)
    folder = work / f"cost-{new_faces}"
    paths = sorted({f"new/IMG_{i // 5:05d}.jpg" for i in range(new_faces)})
    if not (folder / "done").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(runs[0] / "data" / "index", folder / "data" / "index")
        settings = cost_settings(folder, runs[0])
        store = Engine(settings).searcher("facenet").store
        vectors = real[rng.integers(0, len(real), new_faces)] + rng.normal(0, 0.02, (new_faces, real.shape[1]))
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        rows = [
            FaceRow(f"new/IMG_{i // 5:05d}.jpg", "", (400 * (i % 5), 300, 200, 200), 0.99) for i in range(new_faces)
        ]
        with store.writer():
            store.apply(Changes(rows=rows, vectors=vectors, records=[FileRecord(p, 1, 1, p, 5) for p in paths]))
        store.close()
        (folder / "done").write_text("ok")
    return Engine(cost_settings(folder, runs[0])).searcher("facenet"), paths


def cost_settings(folder: Path, run_dir: Path) -> EngineSettings:
    return EngineSettings().model_copy(
        update={"data_dir": folder / "data", "gallery_dir": run_dir / "gallery", "gallery_layout": "photos"}
    )


def other_people(work: Path, fold: str, limit: int) -> np.ndarray:
    """Query vectors of one photo each of up to `limit` people of the other fold (never in this event), cached."""
    cache = work / f"others-{limit}.npy"
    if cache.is_file():
        return np.load(cache)
    from bench_event import people_of
    from engine.core import Engine

    other = next(name for name in FOLDS if name != fold)
    engine = Engine(EngineSettings())
    engine.load_networks("facenet")
    searcher = engine.searcher("facenet")
    vectors = []
    for photos in list(people_of(other).values())[:limit]:
        _, found = searcher.query_vectors([engine.read(photos[0])], 1)
        if len(found):
            vectors.append(found[0])
    out = np.stack(vectors).astype(np.float32)
    np.save(cache, out)
    return out


def cost(work: Path, fold: str, sizes: list[int], new_faces: int, sample: int, present: float) -> None:
    """Matching `new_faces` new faces against N followers as bot/services/deliveries.py matches them: the
    (faces x followers) prefilter, then the search's own decision (photos_for) for each follower it lets through
    (timed on at most `sample` of them, the rest extrapolated). A share `present` of the followers are people of the
    new photos (templates: their real face vectors plus noise); the others are people of the other fold of LFW, never
    in this event (one photo each, plus noise: several followers per person at the larger sizes)."""
    import tracemalloc
    from datetime import datetime, timezone

    import psutil

    from bot.follow_store import FollowerTemplate
    from bot.services.deliveries import PREFILTER_FLOOR, Deliveries

    real = face_vectors(work)
    others = other_people(work, fold, 2000)
    rng = np.random.default_rng(0)
    searcher, paths = cost_store(work, real, new_faces, rng)
    searcher.store.refresh()
    print(
        f"cost: {new_faces} new faces ({len(paths)} photos) matched against N followers as Deliveries matches them "
        f"(prefilter: raw cosine >= {PREFILTER_FLOOR} to any new face, then photos_for per follower let through); "
        f"followers: {present:.0%} people of the new photos ({len(real)} real face vectors of the event), the rest "
        f"{len(others)} people of the other fold, each template plus noise; store {searcher.store.count} faces:",
        flush=True,
    )
    now = datetime.now(timezone.utc)
    for size in sizes:
        inside = int(round(size * present))
        sources = np.concatenate(
            [real[rng.integers(0, len(real), inside)], others[rng.integers(0, len(others), size - inside)]]
        )
        templates = sources + rng.normal(0, 0.03, (size, real.shape[1]))
        templates = (templates / np.linalg.norm(templates, axis=1, keepdims=True)).astype(np.float32)
        followers = [FollowerTemplate(i, i, "facenet", templates[i], now) for i in range(size)]
        Deliveries._prefilter(searcher, paths[:2], followers[:10])  # warm up
        rss = psutil.Process().memory_info().rss
        tracemalloc.start()
        t = time.perf_counter()
        chosen = Deliveries._prefilter(searcher, paths, followers)
        prefilter_s = time.perf_counter() - t
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        timed = [chosen[i] for i in sorted(rng.choice(len(chosen), min(sample, len(chosen)), replace=False))]
        t = time.perf_counter()
        answered = sum(len(searcher.photos_for(f.template)) > 0 for f in timed)
        each = (time.perf_counter() - t) / max(1, len(timed))
        grown = (psutil.Process().memory_info().rss - rss) / 2**20
        print(
            f"  {size:>7} followers (templates {templates.nbytes / 2**20:.1f} MB): prefilter {prefilter_s * 1000:.0f} ms, "
            f"peak {peak / 2**20:.1f} MB; {len(chosen)} let through ({len(chosen) / size:.1%}); photos_for "
            f"{each * 1000:.1f} ms each ({answered}/{len(timed)} timed answered): {len(chosen) * each:.1f} s for all "
            f"{'(extrapolated)' if len(timed) < len(chosen) else ''}; total {prefilter_s + len(chosen) * each:.1f} s; "
            f"RSS grew {grown:.0f} MB",
            flush=True,
        )


# ---- main ----------------------------------------------------------------------------------------------------------


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} cores ({model}), no GPU used"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fold", default="G-L", choices=sorted(FOLDS))
    parser.add_argument("--guests", type=int, default=100)
    parser.add_argument("--strangers", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--initial", type=int, default=5, help="photos in the gallery when the bot starts")
    parser.add_argument("--steady", type=int, default=60, help="photos written one every --period s")
    parser.add_argument("--period", type=float, default=5.0)
    parser.add_argument("--write-mbps", type=float, default=8.0, help="speed of a chunked (upload-like) write")
    parser.add_argument("--burst", type=int, default=500, help="photos copied at once after the steady phase")
    parser.add_argument("--unfollow", type=int, default=3, help="guests who send /unfollow mid-stream")
    parser.add_argument("--no-kill", dest="kill", action="store_false", help="do not SIGKILL the bot midway")
    parser.add_argument("--follow-window", type=int, default=6, help="selfies awaiting the bot's answer at once")
    parser.add_argument("--default-interval", action="store_true", help="DELIVERY_INTERVAL_S=60 (default 0)")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the bot process (repeatable)")
    parser.add_argument("--cost-sizes", default="1000,10000,100000")
    parser.add_argument("--cost-faces", type=int, default=1000)
    parser.add_argument("--cost-sample", type=int, default=300, help="followers whose photos_for is timed")
    parser.add_argument("--cost-present", type=float, default=0.05, help="share of followers in the new photos")
    parser.add_argument("--cost-only", action="store_true", help="only the matching cost (faces of the last run)")
    parser.add_argument("--no-cost", action="store_true")
    parser.add_argument("--self-check", action="store_true", help="check the figures' arithmetic and exit")
    parser.add_argument("--prepare", action="store_true", help="only draw the event's photos (cached) and exit")
    args = parser.parse_args()
    if args.self_check:
        self_check()
        return 0
    if not LFW.is_dir():
        print(f"{LFW} not found: this benchmark needs the LFW development photos in ../shared/data/lfw")
        return 0
    work = (
        EngineSettings().data_dir / "bench" / "live" / f"{args.fold}-g{args.guests}-s{args.strangers}-seed{args.seed}"
    )
    work.mkdir(parents=True, exist_ok=True)
    print(f"bench_live on {machine()}", flush=True)
    if not args.cost_only:
        count = args.initial + args.steady + args.burst
        t = time.perf_counter()
        event = build_event(work, args.fold, args.guests, args.strangers, args.seed, count)
        print(
            f"event: fold {args.fold}, {len(event.guests)} guests, {len(event.strangers)} strangers, "
            f"{len(event.photos)} photos of {CAMERA[0]}x{CAMERA[1]} ({sum(len(v) for v in event.truth.values())} faces "
            f"pasted; ready in {time.perf_counter() - t:.0f} s); initial {args.initial}, steady {args.steady} "
            f"(one every {args.period:g} s), burst {args.burst}",
            flush=True,
        )
        if len(event.photos) < count:
            print(f"  only {len(event.photos)} photos could be planned")
        if args.prepare:
            return 0
        asyncio.run(live(args, event, work))
    if not args.no_cost:
        cost(
            work, args.fold, [int(v) for v in args.cost_sizes.split(",")], args.cost_faces, args.cost_sample,
            args.cost_present,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
