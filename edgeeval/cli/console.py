"""Terminal output of the command-line handlers (library code never prints)."""

from __future__ import annotations

import sys
import time


def progress(message: str) -> None:
    """One timestamped progress line on stderr, so stdout stays clean for tables and paths."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
