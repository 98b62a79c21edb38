"""`make image-test`: build the Docker image, then drive the bot inside it through the fake Bot API.

Not part of `make test` (pytest does not collect this file: its name matches neither test_*.py nor *_test.py): it
needs a container engine, podman or docker, and builds an image, which takes minutes. Without a working engine it
says so and exits with status 2. Otherwise it builds the image (`--network host`, so the build reaches what this
machine reaches), prints its size, checks that the image holds no TensorFlow and that its FaceNet model is ready on
ONNX Runtime, then starts the fake Bot API (tests/support/fake_bot_api.py) on 127.0.0.1, runs the image's bot against it
(`run --network host -e BOT_TOKEN=... -e BOT_API_URL=...`), sends it a photo of a person of the sample gallery baked
into the image, and waits for the answer that names them. Exit status 0 when it does, 1 otherwise (with the
container's last log lines).

    python tests/drive_image.py [--image facesearch-bot] [--no-build] [--engine podman|docker] [-- BUILD FLAGS]

CONTAINER_ENGINE picks the engine; IMAGE_BUILD_FLAGS adds flags to the build (as does anything after `--`). With
podman on a host whose certificate bundle is /etc/ssl/certs/ca-certificates.crt (Debian, Ubuntu), the build mounts
/etc/ssl/certs read-only, so pip inside trusts what the host trusts (a proxy's certificate authority).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from support.fake_bot_api import TOKEN, FakeBotAPI

ROOT = Path(__file__).resolve().parent.parent
NO_ENGINE = "no container engine (podman or docker) found: make image-test needs one"
USER = 2000
PERSON = "Madonna"
# A clear photo of the person in the image's sample gallery (GALLERY_DIR=/gallery); sent mirrored, so it is not
# byte-identical to the gallery file.
PHOTO = "/gallery/Madonna/httpimagegaladevcmseamadonnaprivatdetektivsquaretopsquarejpgv.jpg"
ANSWER_TIMEOUT_S = 900.0  # the container's start, its index of the sample gallery, the answer
RETRY_S = 3.0


def is_reply(text: str) -> bool:
    """The bot's answer to a photo: its summary naming the best match, or "please try again" while it indexes."""
    return "most likely" in text or "try again" in text


@dataclass(frozen=True)
class Container:
    """A container engine's command line (podman or docker) that answers on this machine."""

    command: str

    def run(self, *args: str, capture: bool = True, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([self.command, *args], capture_output=capture, check=check)


def find_engine(preferred: str | None) -> Container | None:
    """The first of `preferred`, podman, docker that is installed and answers `info` (a docker client without its
    daemon does not)."""
    for name in (preferred, "podman", "docker"):
        if name and shutil.which(name):
            probe = subprocess.run([name, "info"], capture_output=True)
            if probe.returncode == 0:
                return Container(name)
    return None


def build_flags(engine: Container, extra: list[str]) -> list[str]:
    flags = ["--network", "host", *shlex.split(os.environ.get("IMAGE_BUILD_FLAGS", "")), *extra]
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if Path(engine.command).name == "podman" and bundle.is_file() and not any(f.startswith("-v") for f in flags):
        flags += ["-v", "/etc/ssl/certs:/etc/ssl/certs:ro"]
    return flags


def image_size_mb(engine: Container, image: str) -> float:
    size = engine.run("image", "inspect", image, "--format", "{{.Size}}").stdout.decode().strip()
    return int(size) / 1e6


def mirrored(jpeg: bytes) -> bytes:
    with Image.open(io.BytesIO(jpeg)) as image:
        buffer = io.BytesIO()
        ImageOps.mirror(image.convert("RGB")).save(buffer, format="JPEG", quality=90)
        return buffer.getvalue()


async def drive(engine: Container, image: str, timeout: float) -> bool:
    """The image's bot against the fake Bot API: True when it answers a photo naming PERSON."""
    photo = mirrored(engine.run("run", "--rm", image, "cat", PHOTO).stdout)
    name = f"facesearch-image-test-{os.getpid()}"
    async with FakeBotAPI() as api:
        command = [
            engine.command, "run", "--rm", "--name", name, "--network", "host",
            "-e", f"BOT_TOKEN={TOKEN}", "-e", f"BOT_API_URL={api.url}", "-e", f"ALLOWED_USER_IDS={USER}", image,
        ]  # fmt: skip
        print(f"$ {shlex.join(command)}", flush=True)
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        logs: list[str] = []

        async def collect() -> None:
            assert process.stdout is not None
            async for line in process.stdout:
                logs.append(line.decode(errors="replace").rstrip())

        collector = asyncio.create_task(collect())
        answered = False
        try:
            # run_polling's deleteWebhook comes just before its first getUpdates (which the fake API does not record)
            await api.wait_for(lambda calls: any(c.method == "deleteWebhook" for c in calls), timeout=timeout)
            print(f"the bot polls the fake Bot API {time.monotonic() - started:.0f} s after start", flush=True)
            while True:  # as a user would: while the bot indexes its gallery it asks to try again in a while
                since = len(api.calls)
                api.send_photo(USER, photo)
                reply = await api.wait_for(
                    lambda calls, since=since: next(
                        (c for c in calls[since:] if c.chat_id == USER and is_reply(c.text)), None
                    ),
                    timeout=max(1.0, started + timeout - time.monotonic()),
                )
                if "most likely" in reply.text:
                    break
                print(f"{time.monotonic() - started:.0f} s: {reply.text!r}; again in {RETRY_S:.0f} s", flush=True)
                await asyncio.sleep(RETRY_S)
            answered = PERSON in reply.text
            print(f"answered {time.monotonic() - started:.0f} s after start:\n  {reply.text}", flush=True)
        except (AssertionError, TimeoutError, asyncio.TimeoutError) as error:  # wait_for's timeout is an assertion
            print(f"no answer naming {PERSON}: {error}", flush=True)
        finally:
            # asynchronously: the fake Bot API runs in this event loop, and the bot's last getUpdates needs an answer
            stop = await asyncio.create_subprocess_exec(
                engine.command,
                "stop",
                "--time",
                "20",
                name,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await stop.wait()
            try:
                await asyncio.wait_for(process.wait(), timeout=60)
            except (TimeoutError, asyncio.TimeoutError):
                process.kill()
            await collector
        if not answered:
            print("the container's last log lines:\n" + "\n".join(f"  {line}" for line in logs[-40:]), flush=True)
        return answered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="facesearch-bot")
    parser.add_argument("--engine", default=os.environ.get("CONTAINER_ENGINE"))
    parser.add_argument("--no-build", action="store_true", help="use the image as it is")
    parser.add_argument(
        "--timeout", type=float, default=ANSWER_TIMEOUT_S, help="seconds to wait for the bot, then its answer"
    )
    parser.add_argument("build_flags", nargs="*", help="more flags for the build (after --)")
    args = parser.parse_args()
    engine = find_engine(args.engine)
    if engine is None:
        print(NO_ENGINE, file=sys.stderr)
        return 2
    print(f"image test (not part of make test) with {engine.command}", flush=True)
    if not args.no_build:
        command = [engine.command, "build", *build_flags(engine, args.build_flags), "-t", args.image, str(ROOT)]
        print(f"$ {shlex.join(command)}", flush=True)
        started = time.monotonic()
        if subprocess.run(command).returncode != 0:
            print("the image build failed", file=sys.stderr)
            return 1
        print(f"built in {time.monotonic() - started:.0f} s", flush=True)
    print(f"image {args.image}: {image_size_mb(engine, args.image):.0f} MB", flush=True)
    checks = engine.run(
        "run", "--rm", args.image, "sh", "-c",
        "python -c \"import importlib.util as u; print('tensorflow installed:', u.find_spec('tensorflow') is not None)\""
        " && python -m engine models",
        check=False,
    )  # fmt: skip
    report = checks.stdout.decode()
    print(report, end="", flush=True)
    if (
        checks.returncode != 0
        or "tensorflow installed: False" not in report
        or not re.search(r"facenet\s+ready", report)
    ):
        print(checks.stderr.decode()[-3000:], file=sys.stderr)
        print("the image has TensorFlow, or its FaceNet model is not ready", file=sys.stderr)
        return 1
    if not asyncio.run(drive(engine, args.image, args.timeout)):
        return 1
    print(f"image test passed: the bot in {args.image} named {PERSON}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
