"""Tables as files: CSV and Excel (XLSX) written row by row, so memory stays flat in the number of rows.

A report or a list describes its columns once (``Column``) and yields its rows as mappings; ``write_csv``
and ``write_xlsx`` turn them into a file and ``download`` into a streamed response. Both formats carry the
same values: money in yuan and points with two decimals, times in China time, enum values as given.

Cells are data, never formulas: a text value that a spreadsheet would run (``=``, ``+``, ``-``, ``@``, a
tab or a carriage return first) is written with a leading apostrophe in CSV and as a plain string in XLSX,
so a nickname like ``=HYPERLINK(...)`` cannot turn into a link or a command on a clerk's machine.
"""
from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import IO, Any, Callable, Iterable, Iterator, Literal, Mapping
from urllib.parse import quote

from flask import Response, stream_with_context
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.utils import get_column_letter

from server.clock import local

Format = Literal["csv", "xlsx"]
FORMATS: tuple[Format, ...] = ("csv", "xlsx")
#: What a column holds, and so how it is written: text, a whole number, fen shown as yuan, hundredths of a
#: point shown as points, a basis-point ratio shown as a percentage, a UTC time shown in China time, a date.
Kind = Literal["text", "int", "fen", "points", "percent_bp", "datetime", "date"]
#: Characters that make a spreadsheet read a cell as a formula (OWASP's CSV injection list).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: Rows buffered before a streamed CSV chunk is sent.
CSV_CHUNK_ROWS = 500
MIME = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


@dataclass(frozen=True)
class Column:
    """One column of an export: the row key it reads, its (Chinese) header and what it holds."""

    key: str
    title: str
    kind: Kind = "text"
    #: Column width in XLSX, in characters.
    width: int = 14


def _hundredths(value: int) -> Decimal:
    return (Decimal(value) / 100).quantize(Decimal("0.01"))


def cell_value(column: Column, value: Any) -> Any:
    """A row's value as the file holds it (numbers stay numbers, times become China-time text)."""
    if value is None:
        return None
    kind = column.kind
    if kind in ("fen", "points"):
        return _hundredths(int(value))
    if kind == "percent_bp":
        return _hundredths(int(value))
    if kind == "int":
        return int(value)
    if kind == "datetime":
        return local(value).strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else str(value)
    if kind == "date":
        return value.isoformat() if isinstance(value, date) else str(value)
    if hasattr(value, "value") and not isinstance(value, (str, int)):
        value = value.value  # an enum
    return str(value)


def _safe_text(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def header_title(column: Column) -> str:
    """The header cell: the title, with the unit for money and points."""
    unit = {"fen": "（元）", "points": "（积分）", "percent_bp": "（%）"}.get(column.kind, "")
    return column.title + unit


def csv_chunks(columns: list[Column], rows: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """The CSV file in chunks: a UTF-8 byte-order mark (so Excel on Windows reads Chinese), the header, the rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    buffer.write("\ufeff")
    writer.writerow([header_title(column) for column in columns])
    pending = 1
    for row in rows:
        writer.writerow(["" if (v := cell_value(c, row.get(c.key))) is None else _safe_text(v) for c in columns])
        pending += 1
        if pending >= CSV_CHUNK_ROWS:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()


def write_csv(columns: list[Column], rows: Iterable[Mapping[str, Any]], out: IO[bytes]) -> int:
    """Write the CSV file to ``out``; the number of data rows."""
    count = 0

    def counted() -> Iterator[Mapping[str, Any]]:
        nonlocal count
        for row in rows:
            count += 1
            yield row

    for chunk in csv_chunks(columns, counted()):
        out.write(chunk.encode("utf-8"))
    return count


def write_xlsx(
    columns: list[Column],
    rows: Iterable[Mapping[str, Any]],
    out: IO[bytes],
    *,
    sheet: str = "Sheet1",
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the XLSX workbook to ``out`` with openpyxl's write-only mode; the number of data rows.

    ``progress`` is called with the rows written so far every 1,000 rows.
    """
    workbook = Workbook(write_only=True)
    worksheet = workbook.create_sheet(title=sheet[:31])
    for index, column in enumerate(columns, start=1):
        worksheet.column_dimensions[get_column_letter(index)].width = column.width
    worksheet.freeze_panes = "A2"
    worksheet.append([header_title(column) for column in columns])
    number_formats = {"fen": "0.00", "points": "0.00", "percent_bp": "0.00"}
    count = 0
    for row in rows:
        cells = []
        for column in columns:
            value = cell_value(column, row.get(column.key))
            cell = WriteOnlyCell(worksheet, value=value)
            if isinstance(value, str):
                cell.data_type = "s"  # never a formula, whatever the text starts with
            elif column.kind in number_formats:
                cell.number_format = number_formats[column.kind]
            cells.append(cell)
        worksheet.append(cells)
        count += 1
        if progress is not None and count % 1000 == 0:
            progress(count)
    workbook.save(out)
    return count


def content_disposition(filename: str) -> str:
    """An attachment header that keeps a Chinese file name (RFC 6266 / 5987) with an ASCII fallback."""
    ascii_name = filename.encode("ascii", "ignore").decode() or "export"
    ascii_name = ascii_name.replace('"', "").replace("\\", "")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


def download(fmt: Format, filename: str, columns: list[Column], rows: Iterable[Mapping[str, Any]], *, sheet: str = "Sheet1") -> Response:
    """The rows as a file download named ``filename`` + the format's extension.

    CSV streams as it is written. XLSX is a zip whose directory comes last, so it is written to a
    temporary file (row by row, memory flat) and then streamed from disk.
    """
    name = f"{filename}.{fmt}"
    headers = {"Content-Disposition": content_disposition(name), "Cache-Control": "no-store"}
    if fmt == "csv":
        body = (chunk.encode("utf-8") for chunk in csv_chunks(columns, rows))
        return Response(stream_with_context(body), mimetype=MIME["csv"], headers=headers)
    spool = tempfile.TemporaryFile()
    write_xlsx(columns, rows, spool, sheet=sheet)
    size = spool.tell()
    spool.seek(0)

    def read() -> Iterator[bytes]:
        with spool:
            while block := spool.read(64 * 1024):
                yield block

    headers["Content-Length"] = str(size)
    return Response(read(), mimetype=MIME["xlsx"], headers=headers)
