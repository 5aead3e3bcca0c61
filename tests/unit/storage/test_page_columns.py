"""The derived-run writer's Arrow columns, built from buffers, equal pyarrow's."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from xsvs_bluesky.storage._page_writer import _column

F8 = {"dtype": "number", "dtype_numpy": "<f8"}
CASES = [
    ({"dtype": "integer", "dtype_numpy": "<i8"}, [1, 2, -3], pa.int64()),
    (F8, [0.5, float("nan"), 1e300], pa.float64()),
    ({"dtype": "number", "dtype_numpy": "<f4"}, np.array([1.5, 2.5]), pa.float32()),
    ({"dtype": "integer", "dtype_numpy": ">i4"}, np.array([7, 8], ">i4"), pa.int32()),
    (
        {"dtype": "boolean", "dtype_numpy": "|b1"},
        [True, False] * 5 + [True],
        pa.bool_(),
    ),
    ({"dtype": "string"}, ["exposure_0", "", "q \u00c5 \u03b2"], pa.string()),
    ({"dtype": "string"}, ["a", None], pa.string()),
    (F8, [], pa.float64()),
]


@pytest.mark.parametrize(("data_key", "values", "arrow_type"), CASES)
def test_columns_equal_pyarrow_array(data_key, values, arrow_type):
    column = _column(values, data_key)
    column.validate(full=True)
    expected = pa.array(list(values), arrow_type)
    assert column.type == expected.type
    assert column.to_pylist() == expected.to_pylist() or (
        # NaN != NaN in the lists
        np.array_equal(
            column.to_numpy(zero_copy_only=False),
            expected.to_numpy(zero_copy_only=False),
            equal_nan=True,
        )
    )


def test_a_page_is_written_without_importing_pandas():
    code = (
        "import sys, numpy as np\n"
        "from xsvs_bluesky.storage._page_writer import _column\n"
        "_column(np.arange(3.0), {'dtype': 'number', 'dtype_numpy': '<f8'})\n"
        "_column(['a', 'b'], {'dtype': 'string'})\n"
        "_column([1, 2], {'dtype': 'integer', 'dtype_numpy': '<i8'})\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
