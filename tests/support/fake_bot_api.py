"""A fake Telegram Bot API server for end-to-end tests: a real HTTP server on 127.0.0.1.

It answers the methods python-telegram-bot calls (JSON, form and multipart bodies), records every
call with its parameters and uploaded files, serves files for getFile downloads, and lets a test play
users: `send_photo`, `send_album`, `send_document`, `send_text`, `press` (an inline button), ... put updates
in the queue that getUpdates serves; `wait_for` waits until the recorded calls satisfy a condition.
`fail_next` makes the next calls of a method fail (429 flood wait, 502), like Telegram under load.
`hold` keeps the calls of a method (or `FILE` downloads) waiting until `release`: a test stops the bot mid-answer.
Texts over 4,096 characters and captions over 1,024 are refused, as Telegram refuses them.
Several bot replicas can share one server: replica `r` uses `replica_url(r)` as its BOT_API_URL, and updates
pushed while `target` is `r` are served only to it (each call records which replica made it).
Like Telegram for updates queued before a change of `allowed_updates`, every queued update is served:
`allowed_updates` records what the bot asked for.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "123456:TEST-fake-token"
FILE = "file"  # `hold(FILE)`: file downloads wait
TEXT_LIMIT, CAPTION_LIMIT = 4096, 1024
BOT_USER = {"id": 123456, "is_bot": True, "first_name": "FaceSearch", "username": "facesearch_test_bot",
            "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}  # fmt: skip


@dataclass
class Call:
    """One Bot API request the bot made."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes]
    at: float
    result: Any = None
    replica: str = ""  # which replica made the call ("" for a single bot)

    @property
    def chat_id(self) -> int | None:
        value = self.params.get("chat_id")
        try:
            return int(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    @property
    def text(self) -> str:
        return str(self.params.get("text") or self.params.get("caption") or "")

    def media(self) -> list[dict]:
        """sendMediaGroup items, with `data` holding the uploaded bytes."""
        items = []
        for item in self.params.get("media") or []:
            item = dict(item)
            ref = str(item.get("media", ""))
            if ref.startswith("attach://"):
                item["data"] = self.files.get(ref.removeprefix("attach://"))
            items.append(item)
        return items

    def uploaded(self, name: str = "photo") -> bytes | None:
        value = self.params.get(name)
        if isinstance(value, str) and value.startswith("attach://"):
            return self.files.get(value.removeprefix("attach://"))
        return self.files.get(name)


@dataclass
class FakeBotAPI:
    token: str = TOKEN
    host: str = "127.0.0.1"
    port: int = 0
    poll_wait: float = 0.5  # longest a getUpdates waits (long polling is capped to keep shutdown fast)
    calls: list[Call] = field(default_factory=list)
    updates: list[dict] = field(default_factory=list)
    served_at: dict[int, float] = field(default_factory=dict)  # update_id -> time getUpdates handed it out
    files: dict[str, bytes] = field(default_factory=dict)  # file_id -> bytes
    file_sizes: dict[str, int] = field(default_factory=dict)
    messages: dict[int, dict] = field(default_factory=dict)  # update_id -> the user's message
    allowed_updates: list[str] | None = None  # as the last getUpdates asked
    failures: dict[str, list[tuple[int, str, dict]]] = field(default_factory=dict)  # method -> queued errors
    target: str = ""  # the replica the next pushed updates go to ("": whoever polls)
    routes: dict[int, str] = field(default_factory=dict)  # update_id -> replica

    def __post_init__(self):
        self._ids = itertools.count(1)
        self._update_ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._new_update = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.failed: list[Call] = []  # calls answered with an error
        self._holds: dict[str, asyncio.Event] = {}  # method (lower case) or FILE -> set when released
        self.held: list[str] = []  # what is waiting on a hold now (method or FILE), in arrival order

    # ---- server life cycle ------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def replica_url(self, replica: str) -> str:
        """BOT_API_URL of one replica: its getUpdates serves the updates pushed for it."""
        return f"{self.url}/{replica}"

    async def start(self) -> FakeBotAPI:
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        app.router.add_route("*", "/{replica}/bot{token}/{method}", self._handle_method)
        app.router.add_get("/{replica}/file/bot{token}/{path:.+}", self._handle_file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeBotAPI:  # noqa: PYI034 - a dataclass; Self needs Python 3.11
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # ---- playing users ----------------------------------------------------------------------

    def _user(self, user_id: int) -> dict:
        return {
            "id": user_id,
            "is_bot": False,
            "first_name": f"User{user_id}",
            "username": f"user{user_id}",
            "language_code": "en",
        }

    @staticmethod
    def _chat(chat_id: int) -> dict:
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": f"User{chat_id}"}
        return {"id": chat_id, "type": "group", "title": f"Group {chat_id}"}

    def _add_file(self, data: bytes, size: int | None = None) -> dict:
        number = next(self._ids)
        file_id = f"file-{number}"
        self.files[file_id] = data
        self.file_sizes[file_id] = len(data) if size is None else size
        return {"file_id": file_id, "file_unique_id": f"u{number}", "file_size": self.file_sizes[file_id]}

    def push_message(self, user_id: int, chat_id: int | None = None, kind: str = "message", **fields) -> int:
        """Queue an update with a message from `user_id`; returns its update_id.

        `kind`: "message", "edited_message", or "channel_post" (no sender; `chat_id` is the channel's).
        """
        chat_id = user_id if chat_id is None else chat_id
        update_id = next(self._update_ids)
        message = {"message_id": fields.pop("message_id", None) or next(self._ids), "date": int(time.time()),
                   "chat": self._chat(chat_id), "from": self._user(user_id), **fields}  # fmt: skip
        if kind == "channel_post":
            del message["from"]
            message["chat"] = {"id": chat_id, "type": "channel", "title": f"Channel {chat_id}"}
            message["sender_chat"] = message["chat"]
        if kind == "edited_message":
            message["edit_date"] = int(time.time())
        self.messages[update_id] = message
        self.routes[update_id] = self.target
        self.updates.append({"update_id": update_id, kind: message})
        self._new_update.set()
        return update_id

    def photo_sizes(self, data: bytes) -> list[dict]:
        small = self._add_file(data[:1000])  # a stand-in thumbnail; the bot should use the largest size
        big = self._add_file(data)
        return [{**small, "width": 90, "height": 90}, {**big, "width": 1024, "height": 1024}]

    def send_album(
        self, user_id: int, photos: list[bytes], chat_id: int | None = None, caption: str | None = None
    ) -> list[int]:
        """A media group: one update per photo, the caption on the first (as Telegram sends it)."""
        group = f"album-{next(self._ids)}"
        ids = []
        for number, data in enumerate(photos):
            fields: dict[str, Any] = {"photo": self.photo_sizes(data), "media_group_id": group}
            if caption and number == 0:
                fields["caption"] = caption
            ids.append(self.push_message(user_id, chat_id, **fields))
        return ids

    def press(self, user_id: int, call: Call, button: str) -> int:
        """Press the inline button labelled `button` (a prefix) under the message the bot sent with `call`."""
        keyboard = call.params.get("reply_markup") or {}
        if isinstance(keyboard, str):
            keyboard = json.loads(keyboard)
        for row in keyboard.get("inline_keyboard", []):
            for item in row:
                if item["text"].startswith(button):
                    return self.press_data(user_id, call, item["callback_data"])
        raise AssertionError(f"no button {button!r} under {call.text[:80]!r}: {keyboard}")

    def press_data(self, user_id: int, call: Call, data: str) -> int:
        """A button press with this callback data under the message the bot sent with `call` (forged data too)."""
        update_id = next(self._update_ids)
        query = {"id": str(next(self._ids)), "from": self._user(user_id), "message": call.result,
                 "chat_instance": "ci", "data": data}  # fmt: skip
        self.routes[update_id] = self.target
        self.updates.append({"update_id": update_id, "callback_query": query})
        self._new_update.set()
        return update_id

    def fail_next(self, method: str, times: int = 1, code: int = 429, retry_after: int = 1) -> None:
        """The next `times` calls of `method` fail: 429 with retry_after, or e.g. 502 Bad Gateway."""
        description = f"Too Many Requests: retry after {retry_after}" if code == 429 else "Bad Gateway"
        parameters = {"retry_after": retry_after} if code == 429 else {}
        self.failures.setdefault(method.lower(), []).extend([(code, description, parameters)] * times)

    def hold(self, method: str) -> None:
        """The next calls of `method` (or `FILE`: downloads) wait until `release(method)`; `held` lists them."""
        self._holds.setdefault(method.lower(), asyncio.Event())

    def release(self, method: str) -> None:
        gate = self._holds.pop(method.lower(), None)
        if gate is not None:
            gate.set()

    async def _wait_if_held(self, what: str) -> None:
        gate = self._holds.get(what.lower())
        if gate is None:
            return
        async with self._changed:
            self.held.append(what.lower())
            self._changed.notify_all()
        try:
            await gate.wait()
        finally:
            self.held.remove(what.lower())

    def send_text(self, user_id: int, text: str, chat_id: int | None = None, reply_to: int | None = None) -> int:
        """`reply_to`: the update_id of the message this one answers."""
        fields: dict[str, Any] = {"text": text}
        if reply_to is not None:
            fields["reply_to_message"] = self.messages[reply_to]
        if text.startswith("/"):
            length = len(text.split()[0])
            fields["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        return self.push_message(user_id, chat_id, **fields)

    def send_photo(self, user_id: int, data: bytes, chat_id: int | None = None, caption: str | None = None,
                   kind: str = "message") -> int:  # fmt: skip
        fields: dict[str, Any] = {"photo": self.photo_sizes(data)}
        if caption:
            fields["caption"] = caption
        return self.push_message(user_id, chat_id, kind=kind, **fields)

    def send_document(self, user_id: int, data: bytes, file_name: str, mime_type: str | None = None,
                      file_size: int | None = None, chat_id: int | None = None) -> int:  # fmt: skip
        document = {**self._add_file(data, file_size), "file_name": file_name}
        if mime_type:
            document["mime_type"] = mime_type
        return self.push_message(user_id, chat_id, document=document)

    def send_sticker(self, user_id: int, chat_id: int | None = None) -> int:
        sticker = {**self._add_file(b"RIFF....WEBP"), "width": 512, "height": 512, "is_animated": False,
                   "is_video": False, "type": "regular", "emoji": "🙂"}  # fmt: skip
        return self.push_message(user_id, chat_id, sticker=sticker)

    def send_animation(self, user_id: int, chat_id: int | None = None) -> int:
        info = self._add_file(b"GIF89a" + b"\0" * 100)
        animation = {
            **info,
            "width": 320,
            "height": 240,
            "duration": 2,
            "file_name": "funny.gif",
            "mime_type": "image/gif",
        }
        document = {**info, "file_name": "funny.gif", "mime_type": "image/gif"}
        return self.push_message(user_id, chat_id, animation=animation, document=document)

    def send_video(self, user_id: int, chat_id: int | None = None) -> int:
        video = {
            **self._add_file(b"\0\0\0\x18ftypmp42"),
            "width": 640,
            "height": 360,
            "duration": 3,
            "mime_type": "video/mp4",
        }
        return self.push_message(user_id, chat_id, video=video)

    def send_voice(self, user_id: int, chat_id: int | None = None) -> int:
        voice = {**self._add_file(b"OggS"), "duration": 2, "mime_type": "audio/ogg"}
        return self.push_message(user_id, chat_id, voice=voice)

    # ---- inspecting the bot's answers -------------------------------------------------------

    def calls_to(self, chat_id: int, *methods: str, since: int = 0) -> list[Call]:
        return [c for c in self.calls[since:] if c.chat_id == chat_id and (not methods or c.method in methods)]

    async def wait_for(self, condition: Callable[[list[Call]], Any], timeout: float = 30.0) -> Any:
        """Wait until `condition(calls)` is truthy and return its value; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                value = condition(self.calls)
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    recent = "\n".join(f"  {c.method} {c.chat_id}: {c.text[:120]!r}" for c in self.calls[-15:])
                    raise AssertionError(f"timed out after {timeout} s waiting for the bot; last calls:\n{recent}")
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=min(left, 0.5))
                except asyncio.TimeoutError:
                    pass

    async def wait_for_text(self, chat_id: int, fragment: str, since: int = 0, timeout: float = 30.0) -> Call:
        """The first sendMessage/editMessageText to `chat_id` after call number `since` containing `fragment`."""

        def found(calls):
            for call in calls[since:]:
                if (
                    call.chat_id == chat_id
                    and call.method in ("sendMessage", "editMessageText")
                    and fragment.lower() in call.text.lower()
                ):
                    return call
            return None

        return await self.wait_for(found, timeout)

    # ---- HTTP handlers ----------------------------------------------------------------------

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        file_id = request.match_info["path"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if file_id not in self.files:
            return web.Response(status=404, text="not found")
        await self._wait_if_held(FILE)
        return web.Response(body=self.files[file_id], content_type="application/octet-stream")

    async def _parse(self, request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        params: dict[str, Any] = dict(request.query)
        files: dict[str, bytes] = {}
        ctype = request.content_type
        if ctype == "application/json":
            body = await request.read()
            if body:
                params.update(json.loads(body))
        elif ctype.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if part.filename is not None:
                    files[part.name] = bytes(await part.read())
                    params[f"{part.name}.filename"] = part.filename  # what the upload is named
                else:
                    params[part.name] = _decode(await part.text())
        elif request.can_read_body:
            form = await request.post()
            for key, value in form.items():
                if hasattr(value, "file"):
                    files[key] = value.file.read()
                else:
                    params[key] = _decode(value)
        return params, files

    async def _handle_method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        params, files = await self._parse(request)
        replica = request.match_info.get("replica", "")
        if method.lower() == "getupdates":
            return web.json_response({"ok": True, "result": await self._get_updates(params, replica)})
        await self._wait_if_held(method)
        call = Call(method=method, params=params, files=files, at=time.monotonic(), replica=replica)
        queued = self.failures.get(method.lower())
        if queued:
            code, description, parameters = queued.pop(0)
            self.failed.append(call)
            body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
            if parameters:
                body["parameters"] = parameters
            return web.json_response(body, status=code)
        handler = getattr(self, f"_api_{method.lower()}", None)
        try:
            call.result = handler(call) if handler else True
        except _ApiError as error:
            self.failed.append(call)
            return web.json_response(
                {"ok": False, "error_code": error.code, "description": error.description}, status=error.code
            )
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        return web.json_response({"ok": True, "result": call.result})

    async def _get_updates(self, params: dict, replica: str = "") -> list[dict]:
        if params.get("allowed_updates") is not None:
            allowed = params["allowed_updates"]
            self.allowed_updates = json.loads(allowed) if isinstance(allowed, str) else list(allowed)
        offset = int(params.get("offset") or 0)
        timeout = min(float(params.get("timeout") or 0), self.poll_wait)
        deadline = time.monotonic() + timeout
        while True:
            mine = [u for u in self.updates if self.routes.get(u["update_id"], "") in ("", replica)]
            pending = [u for u in mine if u["update_id"] >= offset]
            if offset:  # confirmed: this replica's updates before the offset
                done = {u["update_id"] for u in mine if u["update_id"] < offset}
                self.updates = [u for u in self.updates if u["update_id"] not in done]
            if pending or time.monotonic() >= deadline:
                now = time.monotonic()
                for update in pending:
                    self.served_at.setdefault(update["update_id"], now)
                return pending[: int(params.get("limit") or 100)]
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), timeout=max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass

    # ---- Bot API methods --------------------------------------------------------------------

    def _bot_message(self, call: Call, **fields) -> dict:
        chat_id = call.chat_id if call.chat_id is not None else 0
        message = {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "chat": self._chat(chat_id),
            "from": BOT_USER,
            **fields,
        }
        markup = call.params.get("reply_markup")
        if markup:
            message["reply_markup"] = json.loads(markup) if isinstance(markup, str) else markup
        return message

    def _photo_sizes(self, data: bytes | None, reference: Any = None) -> list[dict]:
        """A sent photo's sizes; `reference` a file_id string when the bot sent one instead of bytes."""
        if data is None and isinstance(reference, str) and not reference.startswith("attach://"):
            if reference not in self.files:
                raise _ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
            return [{"file_id": reference, "file_unique_id": f"u-{reference}", "file_size": self.file_sizes[reference],
                     "width": 512, "height": 512}]  # fmt: skip
        info = self._add_file(data or b"")
        return [{**info, "width": 512, "height": 512}]

    def _api_answercallbackquery(self, call: Call) -> bool:
        return True

    def _api_editmessagereplymarkup(self, call: Call) -> dict:
        message = self._bot_message(call, text="", edit_date=int(time.time()))
        if call.params.get("message_id") is not None:
            message["message_id"] = int(call.params["message_id"])
        return message

    def _api_getme(self, call: Call) -> dict:
        return BOT_USER

    def _api_getfile(self, call: Call) -> dict:
        file_id = str(call.params.get("file_id"))
        if file_id not in self.files:
            raise _ApiError(400, "Bad Request: invalid file_id")
        if self.file_sizes[file_id] > 20 * 1024 * 1024:
            raise _ApiError(400, "Bad Request: file is too big")
        return {"file_id": file_id, "file_unique_id": f"u-{file_id}", "file_size": self.file_sizes[file_id],
                "file_path": f"documents/{file_id}.bin"}  # fmt: skip

    def _api_sendmessage(self, call: Call) -> dict:
        if not str(call.params.get("text") or "").strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        if len(str(call.params["text"])) > TEXT_LIMIT:
            raise _ApiError(400, "Bad Request: message is too long")
        return self._bot_message(call, text=str(call.params["text"]))

    def _api_editmessagetext(self, call: Call) -> dict:
        fields = {"text": str(call.params.get("text") or ""), "edit_date": int(time.time())}
        message = self._bot_message(call, **fields)
        if call.params.get("message_id") is not None:
            message["message_id"] = int(call.params["message_id"])
        return message

    @staticmethod
    def _check_caption(caption: Any) -> None:
        if caption is not None and len(str(caption)) > CAPTION_LIMIT:
            raise _ApiError(400, "Bad Request: message caption is too long")

    def _api_sendphoto(self, call: Call) -> dict:
        self._check_caption(call.params.get("caption"))
        fields: dict[str, Any] = {"photo": self._photo_sizes(call.uploaded("photo"), call.params.get("photo"))}
        if call.params.get("caption"):
            fields["caption"] = str(call.params["caption"])
        return self._bot_message(call, **fields)

    def _api_senddocument(self, call: Call) -> dict:
        """A document upload: its bytes stay in the call (`call.uploaded("document")`)."""
        self._check_caption(call.params.get("caption"))
        data = call.uploaded("document")
        if data is None:
            raise _ApiError(400, "Bad Request: there is no document in the request")
        info = self._add_file(data)
        fields: dict[str, Any] = {"document": {**info, "file_name": call.params.get("document.filename") or "document"}}
        if call.params.get("caption"):
            fields["caption"] = str(call.params["caption"])
        return self._bot_message(call, **fields)

    def _api_sendmediagroup(self, call: Call) -> list[dict]:
        media = call.media()
        if not 2 <= len(media) <= 10:
            raise _ApiError(400, "Bad Request: media group must contain 2 to 10 items")
        for item in media:
            self._check_caption(item.get("caption"))
        group_id = str(next(self._ids))
        messages = []
        for item in media:
            fields: dict[str, Any] = {
                "photo": self._photo_sizes(item.get("data"), item.get("media")),
                "media_group_id": group_id,
            }
            if item.get("caption"):
                fields["caption"] = item["caption"]
            messages.append(self._bot_message(call, **fields))
        return messages

    def _api_getmycommands(self, call: Call) -> list:
        for previous in reversed(self.calls):
            if previous.method == "setMyCommands":
                return previous.params.get("commands") or []
        return []

    def _api_getwebhookinfo(self, call: Call) -> dict:
        return {"url": "", "has_custom_certificate": False, "pending_update_count": len(self.updates)}


class _ApiError(Exception):
    def __init__(self, code: int, description: str):
        super().__init__(description)
        self.code = code
        self.description = description


def _decode(value: str) -> Any:
    """PTB sends nested objects as JSON strings in form/multipart bodies; plain strings stay strings."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
