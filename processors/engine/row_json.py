"""A bank's rows as JSON text, column by column: the bytes `orjson.dumps` gives for each row's state dict.

The worker writes every advanced row's state into its station's JSON after every batch. Building
the state dicts made a Python object per number (about 260 a series) only for `orjson` to walk them
again; here each column is serialised once for all rows (`orjson` writes numpy arrays itself, and
writes a NaN as null, as it does a NaN float) and cut into rows at the separators, so a row costs a
few byte strings. A bank's `states_json` must give exactly `orjson.dumps(state(row))` per row
(tests/test_row_json.py).
"""

from __future__ import annotations

import numpy as np
import orjson

__all__ = ["cells", "ragged"]

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def cells(column: np.ndarray) -> list[bytes]:
    """The JSON text of each value of a one-dimensional column (numbers, bools; NaN as null)."""
    if column.size == 0:
        return []
    return orjson.dumps(np.ascontiguousarray(column), option=_NUMPY)[1:-1].split(b",")


def ragged(matrix: np.ndarray, lengths: np.ndarray) -> list[bytes]:
    """The JSON list of each row's first `lengths[i]` entries (`matrix` has two or three dimensions)."""
    depth = matrix.ndim - 1
    opening, closing = b"[" * depth, b"]" * depth
    separator = closing + b"," + opening
    out: list[bytes] = [b"[]"] * matrix.shape[0]
    for length in np.unique(lengths).tolist():
        if length == 0:
            continue
        at = np.flatnonzero(lengths == length)
        text = orjson.dumps(np.ascontiguousarray(matrix[at, :length]), option=_NUMPY)
        for i, row in zip(at.tolist(), text[depth + 1:-depth - 1].split(separator), strict=True):
            out[i] = opening + row + closing
    return out
