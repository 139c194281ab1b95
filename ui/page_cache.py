"""The page, its config and the API description, computed once instead of once per visitor.

Gradio builds `/`, `/config` and `/gradio_api/info` anew for every request: a deep copy and JSON
encoding of this app's ~360 components (0.3–0.4 MB each, ~0.1 s of Python). A hundred voters
opening the app at once then queue ~10 s of work on the event loop, and gradio_client's 5 s
connect timeout fails a third of them (measured: 37 of 100 in `playground bench load`). The responses
are the same bytes for every request that sends the same headers (the app's layout is built once
at start), so this ASGI middleware keeps the first successful answer per (path, query, headers
that can change it) and replays it. A login cookie is part of the key, so each signed-in user
gets their own page.
"""

from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CACHED_PATHS = frozenset({"/", "/config", "/gradio_api/info"})
# Headers a response can depend on: where the app is reached (root URL in the config), who asks
# (login cookie, basic auth) and how the body may be encoded.
KEY_HEADERS = (b"host", b"cookie", b"authorization", b"accept-encoding", b"x-forwarded-host",
               b"x-forwarded-proto", b"x-forwarded-prefix")
MAX_ENTRIES = 64  # ~25 MB at most; least recently used first out


class PageCache:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._entries: OrderedDict[tuple, list[Message]] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] not in CACHED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        key = (scope["path"], scope["query_string"], *(headers.get(h) for h in KEY_HEADERS))
        if key in self._entries:
            self._entries.move_to_end(key)
            for message in self._entries[key]:
                await send(message)
            return
        sent: list[Message] = []

        async def keep(message: Message) -> None:
            sent.append(message)
            await send(message)

        await self.app(scope, receive, keep)
        start = sent[0] if sent else {}
        complete = bool(sent) and sent[-1].get("type") == "http.response.body" and not sent[-1].get("more_body")
        sets_cookie = any(name.lower() == b"set-cookie" for name, _ in start.get("headers", []))
        if start.get("type") == "http.response.start" and start.get("status") == 200 and complete and not sets_cookie:
            self._entries[key] = sent
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)
