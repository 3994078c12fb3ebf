from __future__ import annotations

import sys
from pathlib import Path

# pytest's importlib mode does not let tests import conftest: the test kit is a plain
# module on sys.path (as in the gateway's tests).
sys.path.insert(0, str(Path(__file__).resolve().parent))
