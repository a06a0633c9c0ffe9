"""A fake kubelet: serves only ``GET /containerLogs/{namespace}/{pod}/{container}`` over TLS
on 127.0.0.1, so that the real kube-apiserver has a kubelet to fetch container logs from.

No kubelet runs in the test control plane. When a Node's status names 127.0.0.1 as its
address and this server's port as its kubelet endpoint, the API server's pods/log
subresource connects here. The API server verifies kubelet certificates only when it is
given a CA for them (--kubelet-certificate-authority), and the test control plane gives
none. Everything else about the log path (authentication, the API server's
proxying and streaming, the plane) is real.

Without ``follow=true`` the server returns the configured lines (the last ``tailLines`` of
them when given). With ``follow=true`` it then keeps writing ``tick <n>`` lines every
``interval_seconds`` until the client goes away, which it records.
"""

import asyncio
import ssl
from pathlib import Path
from types import TracebackType

from aiohttp import web

from temper.tls import CertificateAuthority


class FakeKubelet:
    """An HTTPS log server on loopback; use ``async with``."""

    def __init__(self, workdir: Path, lines: list[str], interval_seconds: float = 0.2) -> None:
        self.workdir = workdir
        self.lines = lines
        self.interval_seconds = interval_seconds
        self.requests: list[str] = []
        self.follow_ended = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        lines = list(self.lines)
        tail = request.query.get("tailLines")
        if tail is not None:
            lines = lines[-int(tail) :] if int(tail) else []
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for line in lines:
            await response.write(f"{line}\n".encode())
        if request.query.get("follow") != "true":
            return response
        tick = 0
        try:
            while True:
                await asyncio.sleep(self.interval_seconds)
                tick += 1
                await response.write(f"tick {tick}\n".encode())
        except ConnectionError:
            pass
        finally:
            self.follow_ended.set()
        return response

    async def __aenter__(self) -> "FakeKubelet":
        authority = CertificateAuthority("fake-kubelet-ca")
        cert, key = authority.issue("fake-kubelet", ip_addresses=("127.0.0.1",)).write(
            self.workdir, "fake-kubelet"
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
