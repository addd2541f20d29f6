#!/usr/bin/env python3
"""Load a catalog into a deployed clipsearch (same as `clipsearch bootstrap`).

    python scripts/bootstrap.py data/abo/catalog.jsonl --stack-name Clipsearch-dev
    python scripts/bootstrap.py data/abo/catalog.jsonl --dry-run
    python scripts/bootstrap.py --help

The logic lives in `clipsearch.bootstrap`; this file only makes it runnable
from a source checkout without installing the package.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clipsearch.bootstrap.cli import main

if __name__ == "__main__":
    sys.exit(main())
