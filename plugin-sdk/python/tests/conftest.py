"""Runs the SDK from this checkout's src/ (the plugin venv does not install it)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
