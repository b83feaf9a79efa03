"""Result files: atomic writes, provenance, and output directories that are ours to fill."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from thermosgd._version import __version__
from thermosgd.results.schema import LOCK_FILE, MANIFEST, READABLE_SCHEMAS, SCHEMA_VERSION

if TYPE_CHECKING:  # the readers and refusals answer without importing pandas
    import pandas as pd


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


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc), else by the
    set-and-restore idiom."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see half a file.

    The file gets the mode a plain ``open()`` would give it under the user's umask (mkstemp's
    temporary files are 0600, which would lock every other user of a shared file system out).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from err
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from err
    except RuntimeError as err:  # torch.save reports a failed write without its errno
        Path(tmp).unlink(missing_ok=True)
        if "write" not in str(err).lower():
            raise
        raise OSError(errno.ENOSPC if shutil.disk_usage(path.parent).free < 2**20 else errno.EIO,
                      f"the write failed ({str(err).splitlines()[0]})", str(path)) from err
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


# names that only a thermosgd output holds (run, sweep, isotropic and monitor directories)
_OUR_NAMES = {"config.json", "summary.json", "metrics", "metrics.parquet", "runs",
              "checkpoint.pt", "stationary.csv", "analysis.json", "sweep.toml"}


def check_output_dir(path: Path, kind: str) -> None:
    """Refuse an output directory that holds anything but a previous thermosgd ``kind`` output.

    Raises ValueError (the CLI turns it into exit code 2) before anything is written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output path {path} is a file; give a directory (new or empty)")
    if not path.exists() or not any(p.name != LOCK_FILE for p in path.iterdir()):
        return  # new, empty, or left by a process killed before it wrote anything
    manifest = path / MANIFEST
    if not manifest.is_file():
        ours = sorted(p.name for p in path.iterdir() if p.name in _OUR_NAMES)
        if ours:  # thermosgd's files without their manifest: say so, never overwrite them
            raise ValueError(
                f"output directory {path} holds thermosgd files ({', '.join(ours[:3])}) but "
                f"not their manifest {MANIFEST}, which marks what wrote them (deleted?); "
                "restore it, or choose a new or empty directory")
        raise ValueError(
            f"output directory {path} is not empty and was not written by thermosgd; "
            "choose a new or empty directory"
        )
    found = read_manifest(path)["kind"]
    if found != kind:
        raise ValueError(
            f"output directory {path} holds a thermosgd {found!r} output, not {kind!r}; "
            "choose another directory"
        )


def read_manifest(path: Path) -> dict | None:
    """The manifest of the result directory ``path`` (None when it has none), with its
    ``schema`` version filled in (0.1 wrote none). Raises ValueError for a damaged manifest or
    a schema version this thermosgd cannot read."""
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return None
    try:
        record = json.loads(manifest.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{manifest} is damaged ({err}); restore it, or move the directory "
                         "aside and run again") from None
    if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
        raise ValueError(f"{manifest} is damaged (no result kind in it); restore it, or move "
                         "the directory aside and run again")
    schema = str(record.get("schema", "0.1"))
    if schema not in READABLE_SCHEMAS:
        raise ValueError(f"{path} was written with result schema {schema}; this thermosgd "
                         f"reads schemas {', '.join(READABLE_SCHEMAS)}: upgrade thermosgd")
    return record | {"schema": schema}


def claim_output_dir(path: Path, kind: str, config: dict) -> None:
    """Create ``path`` (after :func:`check_output_dir`) and write its manifest."""
    write_json(Path(path) / MANIFEST,
               {"kind": kind, "schema": SCHEMA_VERSION, "config": config} | provenance())


def describe_os_error(err: OSError) -> str:
    """One line for a file that could not be written or read: the path and what to do."""
    where = err.filename or "a result file"
    hint = {errno.ENOSPC: "the disk is full: free space or choose another --out",
            errno.EDQUOT: "the disk quota is full: free space or choose another --out",
            errno.EROFS: "the file system is read-only: choose a writable --out",
            errno.EACCES: "permission denied: choose a writable --out",
            errno.EPERM: "permission denied: choose a writable --out",
            errno.ENOTDIR: "a path component is a file, not a folder: choose another --out"}
    if err.errno in hint:
        return f"cannot write {where}: {hint[err.errno]}"
    return f"{where}: {err.strerror or err}"
