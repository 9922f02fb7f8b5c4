"""Test-wide set-up: the helpers in this folder (``tiny``) import from every test folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
