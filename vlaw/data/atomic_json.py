"""JSON files written atomically and read back with errors that name the file.

Every small JSON file of a run (state.json, specs beside checkpoints, staging progress, plans)
goes through these two functions: a crash mid-write leaves the old file or the new one, never a
truncated one, and a file that is not valid JSON is an error naming it and what to do.
"""

import json
import os
from typing import Any


class JsonFileError(ValueError):
    """A JSON file of a run is unreadable (names the file and what to do)."""


def write_json(path: str, payload: Any, *, indent: int | None = 2) -> None:
    """Writes `payload` to `path` atomically (temp file in the same directory, then rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temp = f"{path}.tmp-{os.getpid()}"
    with open(temp, "w") as f:
        json.dump(payload, f, indent=indent, sort_keys=True)
    os.replace(temp, path)


def read_json(path: str, default: Any = None) -> Any:
    """What `write_json` wrote at `path`. A missing file gives `default`, or FileNotFoundError
    when no default is given; an unreadable one a JsonFileError naming it."""
    if not os.path.exists(path):
        if default is None:
            raise FileNotFoundError(f"{path} does not exist")
        return default
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise JsonFileError(
            f"{path} is not valid JSON ({error}); restore it, or delete it to redo what it records"
        ) from error
