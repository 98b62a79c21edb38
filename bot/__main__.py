"""`python -m bot`: run the Telegram bot, or the engine demo when BOT_TOKEN is not set."""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ warnings; errors still raise

from bot.settings import Settings


def main() -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which CPU instructions FAISS loaded with
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    settings = Settings()
    if not settings.token():
        print("BOT_TOKEN is not set: running the engine demo instead of the Telegram bot.", flush=True)
        from engine.tools.demo import run_demo

        return run_demo(settings)
    problem = settings.access_problem()
    if problem:
        print(f"Not starting the bot: {problem}", file=sys.stderr, flush=True)
        return 2
    from bot.app import run
    from engine.runtime.onnx import limit_heap_retention

    limit_heap_retention(settings.heap_mmap_threshold_mb)  # camera photos' pixels handed back once freed
    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
