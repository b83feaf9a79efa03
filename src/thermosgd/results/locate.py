"""Which results lie at a path: a result directory itself, or a folder of them.

A result directory carries a manifest (``thermosgd.json``) whose ``kind`` says what wrote it:
``sweep`` (``thermosgd sweep run``), ``isotropic`` (``thermosgd reproduce isotropic``,
``thermosgd simulate``) or ``monitor`` (``thermosgd.Monitor(..., out=DIR)``).
"""

from __future__ import annotations

from pathlib import Path

from thermosgd.results.io import read_manifest
from thermosgd.results.schema import MANIFEST

__all__ = ["KINDS", "damage", "kind", "locate"]

KINDS = ("sweep", "isotropic", "monitor")


def kind(path) -> str | None:
    """The manifest's kind of ``path``: None when it has no manifest, "damaged" when it has
    one that cannot be read (:func:`damage` says why)."""
    if not (Path(path) / MANIFEST).is_file():
        return None
    try:
        found = read_manifest(path)
    except ValueError:
        return "damaged"
    return found["kind"]


def damage(path) -> str:
    """Why the manifest of ``path`` cannot be read, with what to do."""
    try:
        read_manifest(path)
    except ValueError as err:
        return str(err)
    return ""


def locate(path) -> list[tuple[str, Path]]:
    """The results at ``path``: itself, or its subfolders that are results (a subfolder whose
    manifest is damaged is listed as "damaged", so that the others are still read). Raises
    ValueError."""
    path = Path(path)
    found = kind(path)
    if found == "damaged":
        raise ValueError(damage(path))
    if found in KINDS:
        return [(found, path)]
    located = []
    if path.is_dir():
        located = [(k, p) for p in sorted(path.iterdir())
                   if p.is_dir() and (k := kind(p)) in KINDS + ("damaged",)]
    if not located:
        raise ValueError(f"{path} is not a sweep directory, an isotropic output, a monitored run "
                         "or a folder holding them (no thermosgd.json of kind 'sweep', "
                         "'isotropic' or 'monitor'); give the --out of `thermosgd sweep run`, "
                         "`thermosgd reproduce isotropic` or thermosgd.Monitor")
    return located
