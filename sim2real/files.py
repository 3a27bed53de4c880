"""Writing files so that a kill or a crash never leaves half of one (no torch, no SB3: the report uses it)."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` beside ``path`` and rename it into place: readers see the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
