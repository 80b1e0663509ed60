"""Helpers shared by the reference scripts (and tools/bench/): version pinning and JSON output."""
import importlib
import json
import sys
from pathlib import Path

# Distribution name -> importable module, where they differ.
MODULES = {"pillow": "PIL"}


def installed_version(name: str) -> str:
    """`__version__` of the module behind distribution `name` (torch without its "+cu..." tag)."""
    version = importlib.import_module(MODULES.get(name, name)).__version__
    return version.split("+")[0] if name == "torch" else version


def check_versions(pinned: dict) -> None:
    """Exit unless every package of `pinned` (distribution name -> version) has that version."""
    found = {name: installed_version(name) for name in pinned}
    if found != pinned:
        sys.exit(f"version mismatch: want {pinned}, found {found}")


def write_json(path: Path, value) -> None:
    """Indented UTF-8 JSON with a final newline (the fixtures' layout)."""
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
