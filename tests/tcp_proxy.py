"""A TCP proxy for fault tests: the gateway talks to PostgreSQL through it, and the test can
*cut* the database away (every open connection aborted, new ones refused) and *heal* it.

In-process (asyncio, on the test's event loop): no tool to install, and a cut takes effect
before `cut()` returns. Refused means refused: the listening socket is closed, so a connect
gets ECONNREFUSED at once, as from a database host whose server is down; `heal()` listens on
the same port again, so the gateway's `store_url` stays valid.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        """target_host, target_port: where every accepted connection is forwarded (a host
        starting with "/" is a Unix socket directory, as in PostgreSQL's URLs: the socket is
        `<dir>/.s.PGSQL.<port>`)."""
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0
        self.accepted = 0  # connections accepted while healed (diagnostics, tests)

    @property
    def is_cut(self) -> bool:
        return self._server is None

    async def start(self) -> int:
        """Listen on a free loopback port; return it."""
        await self._listen()
        return self.port

    async def cut(self) -> None:
        """Abort every proxied connection (both sides) and refuse new ones until `heal`."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, not a polite FIN: the link is gone
        self._writers.clear()
        for task in list(self._pipes):
            task.cancel()
        for task in list(self._pipes):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if server is not None:
            await server.wait_closed()

    async def heal(self) -> None:
        """Accept again, on the same port."""
        if self._server is None:
            await self._listen()

    async def close(self) -> None:
        await self.cut()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted in the instant of a cut
            writer.transport.abort()
            return
        try:
            host, port = self._target
            if host.startswith("/"):
                up_reader, up_writer = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
            else:
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            return
        if self._server is None:
            up_writer.transport.abort()
            writer.transport.abort()
            return
        self.accepted += 1
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst), name="tcp-proxy.pipe")
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(dst)
            dst.close()  # one side ended: so does the other
