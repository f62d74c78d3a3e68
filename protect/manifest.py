"""Read a label manifest: a CSV or JSON file that maps image paths to labels.

Paths are relative to the source folder and use forward slashes
(`cats/tabby.jpg`), whatever the operating system. A CSV manifest has a header
row naming the columns `path` and `label`; other columns are ignored. A JSON
manifest is either an object (`{"cats/tabby.jpg": "cat"}`) or a list of
objects with `path` and `label` keys. Every problem raises ManifestError with
the file, the line (CSV, invalid JSON) or the value, and what to change.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path, PurePosixPath, PureWindowsPath

from protect.labels import LabelError

SUFFIXES = (".csv", ".json")


class ManifestError(LabelError):
    """A manifest file is missing or invalid; the message names the file and the place."""


def _clean_path(raw: str, where: str) -> str:
    """Return `raw` as a normalised relative POSIX path, or raise ManifestError at `where`."""
    text = raw.strip()
    if not text:
        raise ManifestError(f"{where}: the path is empty; give the image's path relative to SOURCE")
    if "\\" in text:
        raise ManifestError(
            f"{where}: {text!r} contains a backslash; separate folders with forward slashes "
            f"({text.replace(chr(92), '/')!r})"
        )
    if text.startswith("/") or PureWindowsPath(text).drive:
        raise ManifestError(
            f"{where}: {text!r} is an absolute path; give paths relative to SOURCE, such as cats/tabby.jpg"
        )
    parts = PurePosixPath(text).parts  # drops "." parts and repeated slashes
    if ".." in parts:
        raise ManifestError(f"{where}: {text!r} points outside SOURCE; list only images inside SOURCE")
    return PurePosixPath(*parts).as_posix()


def _clean_label(raw: object, where: str, path: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise ManifestError(f"{where}: the label of {path!r} is {raw!r}; a label must be a string or an integer")
    label = str(raw).strip()
    if not label:
        raise ManifestError(f"{where}: {path!r} has an empty label; give every listed image a label")
    return label


class _Entries:
    """Collects path → label pairs, rejecting a path listed twice."""

    def __init__(self) -> None:
        self.labels: dict[str, str] = {}
        self.places: dict[str, str] = {}

    def add(self, raw_path: object, raw_label: object, where: str) -> None:
        if not isinstance(raw_path, str):
            raise ManifestError(f"{where}: the path {raw_path!r} is not a string")
        path = _clean_path(raw_path, where)
        label = _clean_label(raw_label, where, path)
        if path in self.labels:
            raise ManifestError(
                f"{where}: {path!r} is listed again (first at {self.places[path]}); keep one entry per image"
            )
        self.labels[path] = label
        self.places[path] = where


def _read_csv(path: Path) -> dict[str, str]:
    entries = _Entries()
    # utf-8-sig drops the byte-order mark that spreadsheet programs write.
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        columns = [name.strip().lower() for name in header or []]
        if "path" not in columns or "label" not in columns:
            found = ", ".join(header or []) or "nothing"
            raise ManifestError(
                f"{path} line 1: the header row must name the columns path and label (found: {found}); "
                "add a first line such as path,label"
            )
        path_column, label_column = columns.index("path"), columns.index("label")
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue  # blank line
            if len(row) <= max(path_column, label_column):
                raise ManifestError(f"{where}: expected {len(columns)} columns, found {len(row)}")
            entries.add(row[path_column], row[label_column], where)
    return entries.labels


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise ManifestError(f"the key {key!r} appears twice; keep one entry per image")
        seen[key] = value
    return seen


def _read_json(path: Path) -> dict[str, str]:
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path} line {error.lineno} column {error.colno}: invalid JSON ({error.msg})") from None
    except ManifestError as error:
        raise ManifestError(f"{path}: {error}") from None

    entries = _Entries()
    if isinstance(data, dict):
        for key, label in data.items():
            entries.add(key, label, f"{path}, key {key!r}")
    elif isinstance(data, list):
        for number, item in enumerate(data, start=1):
            where = f"{path}, entry {number}"
            if not isinstance(item, dict) or "path" not in item or "label" not in item:
                raise ManifestError(f"{where}: expected an object with \"path\" and \"label\", found {item!r}")
            entries.add(item["path"], item["label"], where)
    else:
        raise ManifestError(
            f"{path}: expected an object mapping paths to labels, or a list of "
            '{"path": ..., "label": ...} objects; found ' + type(data).__name__
        )
    return entries.labels


def read_manifest(path: Path) -> dict[str, str]:
    """Return {relative POSIX path: label} from a .csv or .json manifest."""
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ManifestError(f"manifest {path} must end in .csv or .json, not {path.suffix or 'no extension'}")
    try:
        labels = _read_csv(path) if suffix == ".csv" else _read_json(path)
    except UnicodeDecodeError as error:
        raise ManifestError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8") from None
    except csv.Error as error:
        raise ManifestError(f"{path}: invalid CSV ({error})") from None
    if not labels:
        raise ManifestError(f"{path} lists no images; add one entry per image")
    return labels
