"""Reading a TOML file with an error that names the file, what it is for, and the fix.

One reader for every TOML file handrail reads (profiles, calibration overlays and files, randomization
ranges); each caller passes its own typed error class so that the failure stays in its stage's hierarchy.
Parsing only: the caller validates the document against its schema.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from handrail.errors import HandrailError


def read_toml(
    path: Path, what: str, error_type: type[HandrailError], *, missing_hint: str = "check the path"
) -> dict[str, Any]:
    """Parse ``path`` as TOML, or raise ``error_type`` naming ``what``, the file and the problem.

    ``missing_hint`` ends the message when the file does not exist (e.g. where the bundled one is).
    """
    if not path.is_file():
        raise error_type(f"{what} {path} does not exist — {missing_hint}")
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except tomllib.TOMLDecodeError as error:
        raise error_type(f"{what} {path} is not valid TOML: {error} — fix the syntax there") from error
    except OSError as error:
        raise error_type(f"{what} {path} cannot be read: {error}") from error
