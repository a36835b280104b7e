"""The export writer: the same values in CSV and XLSX, no formulas from hostile text, flat memory."""
from __future__ import annotations

import csv
import io
import tempfile
import tracemalloc
from datetime import datetime, timezone
from typing import Any, Iterator

import openpyxl
from flask import Flask

from server.exports import Column, csv_chunks, download, write_csv, write_xlsx

COLUMNS = [
    Column("id", "编号", "int"),
    Column("nickname", "昵称"),
    Column("paid", "实付", "fen"),
    Column("points", "积分", "points"),
    Column("at", "时间", "datetime"),
]
ROWS: list[dict[str, Any]] = [
    {"id": 1, "nickname": "小明", "paid": 12345, "points": -50, "at": datetime(2026, 11, 30, 16, 30, tzinfo=timezone.utc)},
    {"id": 2, "nickname": "=HYPERLINK(\"http://x\",\"点我\")", "paid": 0, "points": 1, "at": None},
    {"id": 3, "nickname": "@SUM(A1)", "paid": 1, "points": 100, "at": None},
]


def test_csv_has_bom_header_and_china_time() -> None:
    out = io.BytesIO()
    assert write_csv(COLUMNS, ROWS, out) == 3
    text = out.getvalue().decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert rows[0] == ["编号", "昵称", "实付（元）", "积分（积分）", "时间"]
    assert rows[1] == ["1", "小明", "123.45", "-0.50", "2026-12-01 00:30:00"]
    assert rows[2][3] == "0.01" and rows[2][4] == ""


def test_csv_neutralises_formulas() -> None:
    text = "".join(csv_chunks(COLUMNS, ROWS))
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert rows[2][1].startswith("'=") and rows[3][1] == "'@SUM(A1)"


def test_xlsx_opens_with_the_same_values_and_no_formula() -> None:
    out = io.BytesIO()
    assert write_xlsx(COLUMNS, ROWS, out, sheet="订单") == 3
    out.seek(0)
    sheet = openpyxl.load_workbook(out)["订单"]
    values = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert values[0] == ["编号", "昵称", "实付（元）", "积分（积分）", "时间"]
    assert values[1] == [1, "小明", 123.45, -0.5, "2026-12-01 00:30:00"]
    assert sheet["B3"].data_type == "s" and sheet["B3"].value.startswith("=HYPERLINK")


def test_download_streams_csv_and_names_the_file_in_chinese() -> None:
    app = Flask(__name__)
    with app.test_request_context():
        response = download("csv", "订单导出", COLUMNS, iter(ROWS))
        assert response.is_streamed
        assert "filename*=UTF-8''%E8%AE%A2%E5%8D%95%E5%AF%BC%E5%87%BA.csv" in response.headers["Content-Disposition"]
        body = b"".join(response.response)  # type: ignore[arg-type]
    assert body.decode("utf-8").count("\r\n") == 4


def _many(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"id": i, "nickname": f"会员{i}", "paid": i * 7, "points": i, "at": None}


def _peak(write: Any, n: int) -> int:
    with tempfile.TemporaryFile() as out:
        tracemalloc.start()
        write(COLUMNS, _many(n), out)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_csv_memory_is_flat_in_rows() -> None:
    small, large = _peak(write_csv, 2_000), _peak(write_csv, 40_000)
    assert large < small * 2


def test_xlsx_memory_is_flat_in_rows() -> None:
    small, large = _peak(write_xlsx, 2_000), _peak(write_xlsx, 20_000)
    assert large < small * 2
