"""Result files: atomic writes, provenance, and output directories that are ours to fill."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

from thermosgd._version import __version__
from thermosgd.results.schema import MANIFEST, SCHEMA_VERSION



def git_revision() -> str:
    """The git revision of the thermosgd source tree, or "unknown" outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict:
    """Package version and git revision, carried by every result file."""
    return {"package_version": __version__, "git_revision": git_revision()}


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n"))


def write_csv(path: Path, table: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def check_output_dir(path: Path, kind: str) -> None:
    """Refuse an output directory that holds anything but a previous thermosgd ``kind`` output.

    Raises ValueError (the CLI turns it into exit code 2) before anything is written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output path {path} is a file; give a directory (new or empty)")
    if not path.exists() or not any(path.iterdir()):
        return
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise ValueError(
            f"output directory {path} is not empty and was not written by thermosgd; "
            "choose a new or empty directory"
        )
    try:
        found = json.loads(manifest.read_text()).get("kind")
    except (OSError, json.JSONDecodeError):
        found = None
    if found != kind:
        raise ValueError(
            f"output directory {path} holds a thermosgd {found!r} output, not {kind!r}; "
            "choose another directory"
        )


def claim_output_dir(path: Path, kind: str, config: dict) -> None:
    """Create ``path`` (after :func:`check_output_dir`) and write its manifest."""
    write_json(Path(path) / MANIFEST,
               {"kind": kind, "schema": SCHEMA_VERSION, "config": config} | provenance())
