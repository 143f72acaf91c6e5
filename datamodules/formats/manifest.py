"""Reading a JSON annotation file the same way in every reader: a missing file and invalid JSON
are data errors that name the file (and the line); a UTF-8 byte order mark is accepted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datamodules.errors import DataError, DataFileMissing, utf8_text


def read_json(path: Path, what: str) -> Any:
    """The parsed JSON of ``path``; ``what`` names the file in errors ("COCO annotation file")."""
    if not path.is_file():
        raise DataFileMissing(f"{what} {path} not found")
    try:
        with utf8_text(path):
            return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
