"""Reading an uploaded CSV file safely, for every upload (probing datasets, circuit-discovery pairs): the size cap,
UTF-8, no NUL bytes, a readable CSV, blank lines dropped; nothing written to disk, nothing unpickled.

    >>> rows = csv_rows(data, ProbeDataError, "text,label", limits().max_upload_bytes)  # [header, row, ...]
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from interp_core.errors import UserInputError


def rows_list(rows: Sequence[int], limit: int = 5) -> str:
    """Row numbers for a message: "2, 5, 9 and 3 more"."""
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def csv_rows(data: bytes, error: type[UserInputError], header: str, max_bytes: int) -> list[list[str]]:
    """The non-blank rows of an uploaded CSV (the first is its header), or `error` saying what to fix; `header`
    is the expected header row, quoted in the messages; `max_bytes` is limits().max_upload_bytes."""
    if len(data) > max_bytes:
        raise error(f"The file is {len(data) / 1e6:.1f} MB; the limit for uploads (max_upload_bytes) is "
                    f"{max_bytes / 1e6:.1f} MB. Upload fewer rows.")
    if not data.strip():
        raise error(f"The file is empty. Upload a CSV with a header row '{header}' and one row per example.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"The file is not UTF-8 text (the byte at position {exc.start} cannot be read). Save it as "
                    "'CSV UTF-8' and upload it again.") from None
    if "\x00" in text:
        raise error("The file contains NUL bytes, so it is not a plain CSV text file (is it a spreadsheet or "
                    "UTF-16?). Save it as 'CSV UTF-8' and upload it again.")
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise error(f"The file is not a readable CSV: {exc}.") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]  # blank lines are not rows
    if not rows:
        raise error(f"The file has no rows, only blank lines or empty cells. Upload a CSV with a header row "
                    f"'{header}' and one row per example.")
    return rows
