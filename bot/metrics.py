"""Prometheus metrics (prometheus-client, one registry per bot) and the /metrics + /healthz HTTP server."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:  # aiohttp is imported when the server starts: METRICS_PORT is off by default (a bot's start-up)
    from aiohttp import web

log = logging.getLogger(__name__)

STAGES = ("queue", "download", "detect", "embed", "search", "send", "total")
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _IndexSizes:
    """Collector: entries in each model's live index, read at scrape time."""

    def __init__(self, sizes: Callable[[], dict[str, int]]):
        self.sizes = sizes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("facesearch_index_size", "Entries in the live index, per model.", labels=["model"])
        for model, count in self.sizes().items():
            family.add_metric([model], count)
        yield family


class Metrics:
    def __init__(self, index_sizes: Callable[[], dict[str, int]], queue_length: Callable[[], int]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.photos = Counter("facesearch_photos_searched", "Photos searched (one per photo of an album).", registry=r)
        self.faces = Counter("facesearch_faces_found", "Faces found in searched photos.", registry=r)
        self.stage = Histogram(
            "facesearch_stage_seconds", "Time per stage of answering a photo.", ["stage"], buckets=BUCKETS, registry=r
        )
        self.queue = Gauge("facesearch_queue_length", "Photos waiting for or in the worker pool.", registry=r)
        self.queue.set_function(lambda: float(queue_length()))
        self.errors = Counter("facesearch_errors", "Errors and refusals by kind.", ["kind"], registry=r)
        self.busy = Counter("facesearch_busy_refusals", "Photos refused because the queue was full.", registry=r)
        self.admissions = Counter(
            "facesearch_invite_admissions", "Users admitted by an invite link (ALLOWED_USER_IDS=invite).", registry=r
        )
        self.refusals = Counter(
            "facesearch_access_refusals",
            "Refused updates by reason: not_allowed (not on the list), no_invite (invite mode, not admitted), "
            "invalid_invite (a /start code that admits nobody), lookup_limit (a face past MAX_PERSONS_PER_DAY).",
            ["reason"],
            registry=r,
        )
        r.register(_IndexSizes(index_sizes))
        self._runner: web.AppRunner | None = None
        self.host: str | None = None
        self.port: int | None = None

    def error(self, kind: str) -> None:
        self.errors.labels(kind=kind).inc()

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    def errors_by_kind(self) -> dict[str, float]:
        found = {}
        for metric in self.registry.collect():
            if metric.name == "facesearch_errors":
                for sample in metric.samples:
                    if sample.name.endswith("_total"):
                        found[sample.labels["kind"]] = sample.value
        return found

    def median_seconds(self, stage: str = "total") -> float | None:
        """The histogram's median estimate (upper bound of the bucket holding it)."""
        count = self.value("facesearch_stage_seconds_count", {"stage": stage})
        if not count:
            return None
        for bound in BUCKETS:
            if self.value("facesearch_stage_seconds_bucket", {"stage": stage, "le": str(bound)}) >= count / 2:
                return bound
        return float("inf")

    async def serve(self, host: str, port: int, health: Callable[[], Awaitable[tuple[bool, dict]]]) -> None:
        from aiohttp import web

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(request: web.Request) -> web.Response:
            healthy, body = await health()
            return web.json_response(body, status=200 if healthy else 503)

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.host, self.port = sockets[0].getsockname()[:2]
        log.info("metrics on http://%s:%d/metrics, health on /healthz", host, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
