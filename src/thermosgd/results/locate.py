"""Which results lie at a path: a result directory itself, or a folder of them.

A result directory carries a manifest (``thermosgd.json``) whose ``kind`` says what wrote it:
``sweep`` (``thermosgd sweep run``), ``isotropic`` (``thermosgd reproduce isotropic``,
``thermosgd simulate``) or ``monitor`` (``thermosgd.Monitor(..., out=DIR)``).
"""

from __future__ import annotations

import json
from pathlib import Path

from thermosgd.results.schema import MANIFEST

__all__ = ["KINDS", "kind", "locate"]

KINDS = ("sweep", "isotropic", "monitor")


def kind(path) -> str | None:
    """The manifest's kind of ``path``, or None when it has no readable manifest."""
    try:
        return json.loads((Path(path) / MANIFEST).read_text()).get("kind")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def locate(path) -> list[tuple[str, Path]]:
    """The results at ``path``: itself, or its subfolders that are results. Raises ValueError."""
    path = Path(path)
    found = kind(path)
    if found in KINDS:
        return [(found, path)]
    located = []
    if path.is_dir():
        located = [(k, p) for p in sorted(path.iterdir()) if p.is_dir() and (k := kind(p)) in KINDS]
    if not located:
        raise ValueError(f"{path} is not a sweep directory, an isotropic output, a monitored run "
                         "or a folder holding them (no thermosgd.json of kind 'sweep', "
                         "'isotropic' or 'monitor'); give the --out of `thermosgd sweep run`, "
                         "`thermosgd reproduce isotropic` or thermosgd.Monitor")
    return located
