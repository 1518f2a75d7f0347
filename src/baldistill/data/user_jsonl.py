"""A user's own train/test JSONL files, with configurable field names: each line
checked against the schema, a bad one named by file, line and field."""

from __future__ import annotations

from pathlib import Path

from baldistill.core.errors import BaldistillError
from baldistill.core.files import read_jsonl
from baldistill.core.params import JsonlFields
from baldistill.core.rows import Row, parse_row


def read_user_jsonl(path: Path, fields: JsonlFields, split: str) -> list[Row]:
    """Rows of a user's file, each field checked against the schema: a line
    that fails names its file, line and field; ids (which key the taken-rows
    bookkeeping) must be unique, and a duplicate names both lines."""
    first_line: dict[str, str] = {}

    def parse(obj: dict, where: str) -> Row:
        lineno = where.rsplit(":", 1)[1]
        mapped = {
            key: _user_field(obj, name, where, allow_int=key in ("id", "label"))
            for key, name in (("input", fields.input), ("label", fields.label), ("domain", fields.domain))
        }
        mapped["id"] = _user_field(obj, fields.id, where, allow_int=True) if fields.id else f"{split}-{lineno}"
        if mapped["id"] in first_line:
            raise BaldistillError(
                f"{where}: field '{fields.id}': duplicate id {mapped['id']!r} "
                f"(first on line {first_line[mapped['id']]})"
            )
        first_line[mapped["id"]] = lineno
        extra = {k: v for k, v in obj.items() if k not in {fields.id, fields.input, fields.label, fields.domain}}
        return parse_row({**mapped, "meta": extra}, where)

    rows = read_jsonl(path, parse)
    if not rows:
        raise BaldistillError(f"{path}: no rows (the {split} file is empty)")
    return rows


def _user_field(obj: dict, name: str, where: str, *, allow_int: bool) -> str:
    """One required text field; integers are taken for ids and labels (class
    numbers are common), anything else that is not a non-empty string fails."""
    if name not in obj or obj[name] is None:
        raise BaldistillError(f"{where}: field '{name}': missing")
    value = obj[name]
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        expected = "a string or an integer" if allow_int else "a string"
        raise BaldistillError(f"{where}: field '{name}': expected {expected}, got {type(value).__name__}")
    if not value.strip():
        raise BaldistillError(f"{where}: field '{name}': empty")
    return value
