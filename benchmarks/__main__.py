"""`python -m benchmarks`: run every benchmark script; each writes its section of docs/benchmarks.md."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

SKIP = {"report", "__main__"}


def main() -> int:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name not in SKIP)
    only = set(sys.argv[1:])
    for name in names:
        if only and name not in only:
            continue
        print(f"== benchmark: {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
