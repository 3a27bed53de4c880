"""A progress line for long work: steps, steps/s, ETA; a plain line every few seconds when not on a terminal."""

from __future__ import annotations

import shutil
import sys
import time


def fmt_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def redraw(stream, text: str) -> None:
    """Redraw one terminal line in place. A line wider than the terminal wraps, and ``\r`` then returns only to
    its last row: each redraw would stack a new line. So it is cut to the width, the live numbers first."""
    width = shutil.get_terminal_size((80, 24)).columns
    if len(text) >= width:
        text = text[:max(width - 2, 1)] + "…"
    stream.write("\r\033[K" + text)
    stream.flush()


class Progress:
    """Reports ``done/total`` with rate and ETA; redraws in place on a TTY, else logs every ``every_s`` seconds."""

    def __init__(self, total: int, label: str, start: int = 0, every_s: float = 30.0, stream=None):
        self.total = total
        self.label = label
        self.start = start
        self.every_s = every_s
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self._last_print = 0.0

    def line(self, done: int, extra: str = "") -> str:
        elapsed = time.monotonic() - self.t0
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        pct = 100.0 * done / self.total if self.total else 100.0
        eta_s = fmt_duration(eta) if eta == eta else "?"
        return f"{self.label}: {done:,}/{self.total:,} ({pct:4.1f}%)  {rate:,.0f} steps/s  elapsed {fmt_duration(elapsed)}  ETA {eta_s}  {extra}".rstrip()

    def update(self, done: int, extra: str = "") -> None:
        now = time.monotonic()
        if self.tty:
            if now - self._last_print > 0.2:
                redraw(self.stream, self.line(done, extra))
                self._last_print = now
        elif now - self._last_print > self.every_s:
            self.stream.write(self.line(done, extra) + "\n")
            self.stream.flush()
            self._last_print = now

    def close(self, done: int, extra: str = "") -> None:
        # The last line is written whole (it may wrap: nothing redraws it).
        self.stream.write(("\r\033[K" if self.tty else "") + self.line(done, extra) + "\n")
        self.stream.flush()


def console():
    """A rich Console for tables: the terminal's width, or a wide one when piped (``| cat``, a file), where
    rich would otherwise assume 80 columns and cut the very names a user must type."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=240)
