"""The console adapter: a REPL on a text stream, prompt `ray> ` (what `rayops up` shows).

It works on a terminal and in a pipe (the subprocess tests drive it through stdin): lines are read
by a daemon thread and handed to the event loop, so notifications can be printed between prompts
and a blocked read never keeps the process alive at exit. The person is the configured local user
(`console:<user>`); there is no login, because whoever has the terminal has the laptop.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TextIO

from bot.adapters.base import (
    CommandCallback,
    DestinationKind,
    IncomingCommand,
    Notification,
    Platform,
    Reply,
)
from bot.render import to_text

PROMPT = "ray> "
EXIT_WORDS = frozenset({"exit", "quit", "logout"})


class ConsoleAdapter:
    platform = Platform.CONSOLE

    def __init__(self, user: str, stdin: TextIO, stdout: TextIO, prompt: str = PROMPT) -> None:
        self.user = user
        self.stdin = stdin
        self.stdout = stdout
        self.prompt = prompt
        self._stopped = asyncio.Event()
        self._write_lock = threading.Lock()
        self._at_prompt = False  # waiting for input: a notification must re-show the prompt

    def _write(self, text: str) -> None:
        with self._write_lock:
            try:
                self.stdout.write(text)
                self.stdout.flush()
            except (BrokenPipeError, ValueError):  # the reader went away: nothing to tell anyone
                pass

    async def start(self, on_command: CommandCallback) -> None:
        """Run the REPL until end of input, an exit word, or `stop()`."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()

        def reader() -> None:
            try:
                for line in self.stdin:
                    loop.call_soon_threadsafe(lines.put_nowait, line)
            except (OSError, ValueError):
                pass
            finally:
                try:
                    loop.call_soon_threadsafe(lines.put_nowait, None)
                except RuntimeError:  # the loop has closed: nobody is waiting any more
                    pass

        threading.Thread(target=reader, name="console-stdin", daemon=True).start()
        self._write(
            f"rayops console: you are console:{self.user}. Type `help` for commands, `exit` to leave.\n"
        )
        while not self._stopped.is_set():
            self._write(self.prompt)
            self._at_prompt = True
            get = asyncio.ensure_future(lines.get())
            stop = asyncio.ensure_future(self._stopped.wait())
            done, _ = await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                break
            stop.cancel()
            self._at_prompt = False
            line = get.result()
            if line is None:
                self._write("\n")
                break
            text = line.strip()
            if not text:
                continue
            if text.lower() in EXIT_WORDS:
                break
            command = IncomingCommand(Platform.CONSOLE, self.user, text, self.user, channel_id="console")
            reply = await on_command(command)
            await self.send_reply(command, reply)
        self._stopped.set()

    async def stop(self) -> None:
        self._stopped.set()

    async def send_reply(self, command: IncomingCommand, reply: Reply) -> None:
        self._write(to_text(reply) + "\n")

    async def post_notification(self, notification: Notification) -> None:
        tag = "devops" if notification.to.kind is DestinationKind.CHANNEL else "notice"
        body = to_text(notification.reply).replace("\n", "\n  ")
        if self._at_prompt:  # between prompts: on a fresh line, then the prompt again
            self._write(f"\n[{tag}] {body}\n{self.prompt}")
        else:  # caused by the command being answered: before its answer
            self._write(f"[{tag}] {body}\n")
