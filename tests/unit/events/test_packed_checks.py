"""The whole-block checks of packed columns against plain-Python twins, message for message.

`ChainColumns._check` and `SurfaceColumns._check` decide a clean block with a few NaN-ignoring
reductions and walk the rules only when one fails. The twins below walk every cell in the documented
rule order, so any block — clean, or broken in one or several places at once — must get the same
outcome: accepted by both, or rejected by both with the same message (column and row included).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from volguard_common.events._packed import KEY_MAX_LENGTH
from volguard_common.events.chain import (
    ALL_QUOTE_FLAGS,
    CHAIN_FLOAT_COLUMNS,
    CHAIN_INT_COLUMNS,
    ChainColumns,
    QuoteFlag,
)
from volguard_common.events.surface_columns import (
    ALL_IV_FLAGS,
    SURFACE_FLOAT_COLUMNS,
    SURFACE_INT_COLUMNS,
    SurfaceColumns,
)

PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values that sit on every boundary the rules draw: missing, infinite, zero, negative, tiny, ordinary.
FLOAT_EDGES = [math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 5e-324, 0.05, 150.0, 24_000.0, 1e308]
INT_EDGES = [-1, -(2**62), 0, 1, 31, 32, 64, 127, 128, 2**40]


# ---- plain-Python twins (test reference only) -----------------------------------------------------
def chain_error(floats: np.ndarray[Any, Any], ints: np.ndarray[Any, Any]) -> str | None:
    """The first broken ChainSnapshot rule, cell by cell, or None."""
    rows = floats.shape[1]
    cells = [(c, r) for c in range(floats.shape[0]) for r in range(rows)]
    for c, r in cells:
        if math.isinf(floats[c][r]):
            return f"ChainSnapshot: {CHAIN_FLOAT_COLUMNS[c]} is infinite at row {r}"
    strike = floats[0]
    for r in range(rows):
        if math.isnan(strike[r]):
            return f"ChainSnapshot: strike is missing at row {r}"
    for c, r in cells:
        if floats[c][r] <= 0:
            return f"ChainSnapshot: {CHAIN_FLOAT_COLUMNS[c]} must be > 0 (None for no quote), row {r}"
    for i in range(1, rows):
        if not strike[i] > strike[i - 1]:
            return (
                f"ChainSnapshot: strike must be strictly increasing; row {i} has {strike[i]} "
                f"after {strike[i - 1]}"
            )
    for c in range(ints.shape[0]):
        for r in range(rows):
            if ints[c][r] < 0:
                return f"ChainSnapshot: {CHAIN_INT_COLUMNS[c]} must be >= 0, row {r}"
    for side in range(2):
        for r in range(rows):
            if int(ints[-2 + side][r]) & ~ALL_QUOTE_FLAGS:
                return f"ChainSnapshot: {CHAIN_INT_COLUMNS[-2 + side]} has unknown quote-flag bits at row {r}"
    for side, name in enumerate(("call", "put")):
        for r in range(rows):
            bid, ask = floats[1 + 3 * side][r], floats[2 + 3 * side][r]
            if bid > ask and not int(ints[-2 + side][r]) & QuoteFlag.CROSSED:
                return (
                    f"ChainSnapshot: {name}_bid {bid} > {name}_ask {ask} at strike {strike[r]} "
                    f"(row {r}) without the CROSSED flag in {name}_flags"
                )
    return None


def surface_error(floats: np.ndarray[Any, Any], ints: np.ndarray[Any, Any]) -> str | None:
    """The first broken StrikeSurface rule, cell by cell, or None."""
    rows = floats.shape[1]
    strike = floats[0]
    for r in range(rows):
        if not 0.0 < strike[r] < math.inf:
            return f"StrikeSurface: strike must be finite and > 0, row {r} is {strike[r]}"
    for i in range(1, rows):
        if not strike[i] > strike[i - 1]:
            return f"StrikeSurface: strike must be strictly increasing at row {i}"
    for c in (1, 2):
        for r in range(rows):
            if floats[c][r] <= 0.0 or math.isinf(floats[c][r]):
                return (
                    f"StrikeSurface: {SURFACE_FLOAT_COLUMNS[c]} must be > 0 and finite (NaN for unknown), "
                    f"row {r}"
                )
    for c in range(3, floats.shape[0]):
        for r in range(rows):
            if math.isinf(floats[c][r]):
                return f"StrikeSurface: {SURFACE_FLOAT_COLUMNS[c]} is infinite at row {r}"
    for c in range(ints.shape[0]):
        for r in range(rows):
            if int(ints[c][r]) & ~ALL_IV_FLAGS:
                return f"StrikeSurface: {SURFACE_INT_COLUMNS[c]} has bits outside IvFlag at row {r}"
    return None


def outcome(build: Any, *args: Any) -> str | None:
    try:
        build(*args)
    except ValueError as exc:
        return str(exc)
    return None


# ---- block strategies: a valid block, then a few cells set to boundary values --------------------
@st.composite
def blocks(
    draw: st.DrawFn, n_floats: int, n_ints: int, flag_bits: int, min_rows: int, rows: int | None = None
) -> Any:
    # Short blocks often: the edge cases (a lone strike, a single step) live there.
    if rows is None:
        rows = draw(st.sampled_from(sorted({min_rows, 1, 2, 3, 6})))
    steps = draw(st.lists(st.sampled_from([0.05, 50.0, 100.0]), min_size=rows, max_size=rows))
    floats = np.empty((n_floats, rows))
    floats[0] = 20_000.0 + np.cumsum(steps)
    prices = st.one_of(st.just(math.nan), st.floats(0.05, 500.0))
    for c in range(1, n_floats):
        floats[c] = draw(st.lists(prices, min_size=rows, max_size=rows))
    ints = np.empty((n_ints, rows), dtype=np.int64)
    for c in range(n_ints):
        ints[c] = draw(st.lists(st.integers(0, flag_bits), min_size=rows, max_size=rows))
    if rows:
        for _ in range(draw(st.sampled_from([0, 1, 1, 2, 3]))):
            if draw(st.booleans()):
                # The strike column twice as often as the others: it has rules of its own.
                column = draw(st.sampled_from([0, *range(n_floats)]))
                floats[column, draw(st.integers(0, rows - 1))] = draw(st.sampled_from(FLOAT_EDGES))
            else:
                ints[draw(st.integers(0, n_ints - 1)), draw(st.integers(0, rows - 1))] = draw(
                    st.sampled_from(INT_EDGES)
                )
    return floats, ints


def chain_keys(rows: int) -> list[list[str]]:
    return [[f"NSE_FO|{i}" for i in range(rows)], [f"NSE_FO|{i + 1000}" for i in range(rows)]]


@PROPERTY
@given(blocks(len(CHAIN_FLOAT_COLUMNS), len(CHAIN_INT_COLUMNS), ALL_QUOTE_FLAGS, 1))
def test_chain_check_matches_its_cell_by_cell_twin(block: Any) -> None:
    floats, ints = block
    expected = chain_error(floats, ints)
    got = outcome(lambda: ChainColumns.adopt(floats.copy(), ints.copy(), chain_keys(floats.shape[1])))
    assert got == expected


@PROPERTY
@given(blocks(len(SURFACE_FLOAT_COLUMNS), len(SURFACE_INT_COLUMNS), ALL_IV_FLAGS, 0))
def test_surface_check_matches_its_cell_by_cell_twin(block: Any) -> None:
    floats, ints = block
    expected = surface_error(floats, ints)
    got = outcome(lambda: SurfaceColumns.adopt(floats.copy(), ints.copy()))
    assert got == expected


def _clean_chain() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    floats = np.array([[23_950.0, 24_000.0, 24_050.0], *([[100.0, np.nan, 120.0]] * 6)])
    floats[2::3] += 1.0  # asks one rupee above bids
    ints = np.zeros((len(CHAIN_INT_COLUMNS), 3), dtype=np.int64)
    return floats, ints


def _clean_surface() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    floats = np.array([[23_950.0, 24_000.0, 24_050.0], *([[0.13, np.nan, -0.4]] * 10)])
    floats[1:3] = np.abs(floats[1:3])  # vols are > 0; Greeks may be negative
    return floats, np.zeros((2, 3), dtype=np.int64)


@pytest.mark.parametrize("kind", ["chain", "surface"])
def test_every_cell_set_to_every_edge_value_matches_the_twin(kind: str) -> None:
    clean, twin, build = (
        (_clean_chain, chain_error, lambda f, i: ChainColumns.adopt(f, i, chain_keys(3)))
        if kind == "chain"
        else (_clean_surface, surface_error, SurfaceColumns.adopt)
    )
    floats, ints = clean()
    assert twin(floats, ints) is None
    for (column, row), value in itertools.product(np.ndindex(floats.shape), FLOAT_EDGES):
        bad = floats.copy()
        bad[column, row] = value
        assert outcome(build, bad, ints.copy()) == twin(bad, ints), (column, row, value)
    for (column, row), value in itertools.product(np.ndindex(ints.shape), INT_EDGES):
        bad_ints = ints.copy()
        bad_ints[column, row] = value
        assert outcome(build, floats.copy(), bad_ints) == twin(floats, bad_ints), (column, row, value)


def test_chain_with_quotes_missing_in_the_wings_and_a_flagged_cross_is_accepted() -> None:
    floats = np.array(
        [
            [23_950.0, 24_000.0, 24_050.0],  # strike
            [np.nan, 151.0, 122.5],  # call_bid (151 > ask, flagged below)
            [181.0, 150.0, 123.5],
            [np.nan, np.nan, 123.0],
            [110.0, 130.0, np.nan],
            [111.0, 131.0, 160.0],
            [110.5, 130.5, 159.0],
        ]
    )
    ints = np.zeros((len(CHAIN_INT_COLUMNS), 3), dtype=np.int64)
    ints[-2] = [int(QuoteFlag.ZERO_BID), int(QuoteFlag.CROSSED), 0]
    columns = ChainColumns.adopt(floats, ints, chain_keys(3))
    assert columns.rows == 3


def test_one_strike_chain_and_one_strike_surface() -> None:
    floats = np.full((len(CHAIN_FLOAT_COLUMNS), 1), np.nan)
    floats[0, 0] = 24_000.0
    floats[2, 0] = 5.0  # a call ask: the NaN-ignoring reductions see one real price
    ints = np.zeros((len(CHAIN_INT_COLUMNS), 1), dtype=np.int64)
    assert ChainColumns.adopt(floats.copy(), ints.copy(), chain_keys(1)).rows == 1
    floats[0, 0] = np.nan
    with pytest.raises(ValueError, match="strike is missing at row 0"):
        ChainColumns.adopt(floats, ints, chain_keys(1))
    surface = np.full((len(SURFACE_FLOAT_COLUMNS), 1), np.nan)
    surface[0, 0] = 24_000.0
    assert SurfaceColumns.adopt(surface, np.zeros((2, 1), dtype=np.int64)).rows == 1


def test_surface_with_every_iv_and_greek_unknown_is_accepted() -> None:
    # An expiry where no IV solved is a valid surface: all NaN is "unknown", not a bad value.
    floats = np.full((len(SURFACE_FLOAT_COLUMNS), 4), np.nan)
    floats[0] = [24_000.0, 24_050.0, 24_100.0, 24_150.0]
    surface = SurfaceColumns.adopt(floats, np.ones((2, 4), dtype=np.int64))
    assert np.isnan(surface.floats("iv_call")).all()


class _Key(str):
    """A str subclass: accepted like any string, as it always was."""


@pytest.mark.parametrize(
    ("call_keys", "expected"),
    [
        (["NSE_FO|1", "NSE_FO|2"], None),
        ([_Key("NSE_FO|1"), "NSE_FO|2"], None),
        (["NSE_FO|1", "x" * KEY_MAX_LENGTH], None),
        (["NSE_FO|1", ""], "ChainSnapshot: call_instrument_key row 1 must be a string of 1..64 chars"),
        (
            ["x" * (KEY_MAX_LENGTH + 1), "NSE_FO|2"],
            "ChainSnapshot: call_instrument_key row 0 must be a string of 1..64 chars",
        ),
        (["NSE_FO|1", 40002], "ChainSnapshot: call_instrument_key row 1 must be a string of 1..64 chars"),
        ([None, ""], "ChainSnapshot: call_instrument_key row 0 must be a string of 1..64 chars"),
        (
            [["NSE_FO|1"], "NSE_FO|2"],
            "ChainSnapshot: call_instrument_key row 0 must be a string of 1..64 chars",
        ),
    ],
)
def test_instrument_keys_are_checked_row_by_row_on_failure(
    call_keys: list[Any], expected: str | None
) -> None:
    floats = np.full((len(CHAIN_FLOAT_COLUMNS), 2), np.nan)
    floats[0] = [24_000.0, 24_050.0]
    ints = np.zeros((len(CHAIN_INT_COLUMNS), 2), dtype=np.int64)
    wire = ChainColumns.adopt(floats, ints, [["A", "B"], ["C", "D"]]).to_wire()
    got = outcome(lambda: ChainColumns.from_wire(wire | {"call_instrument_key": call_keys}))
    assert got == expected


def _stacked(segments: Any) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Several surfaces' blocks one after another, flat, as `adopt_stacked` takes them."""
    floats = np.concatenate([f.ravel() for f, _ in segments])
    ints = np.concatenate([i.ravel() for _, i in segments])
    return floats, ints, [0, *itertools.accumulate(f.shape[1] for f, _ in segments)]


def _check_segments_against_each_alone(segments: Any) -> None:
    """Several expiries' surfaces stacked (strikes restart at each segment): the same surfaces, or the
    same error as the first bad segment adopted alone. A surface's blocks are C-contiguous and
    read-only (its wire bytes and hash are those of the segment adopted alone), and so are the
    stacked blocks it was cut from: nobody writes to them after."""
    floats, ints, bounds = _stacked(segments)
    errors = [surface_error(f, i) for f, i in segments]
    expected = next((error for error in errors if error is not None), None)
    got = outcome(lambda: SurfaceColumns.adopt_stacked(floats.copy(), ints.copy(), bounds))
    assert got == expected
    if expected is None:
        surfaces = SurfaceColumns.adopt_stacked(floats, ints, bounds)
        assert not floats.flags.writeable
        assert not ints.flags.writeable
        for surface, (f, i) in zip(surfaces, segments, strict=True):
            alone = SurfaceColumns.adopt(f.copy(), i.copy())
            np.testing.assert_array_equal(surface.float_block, f)
            np.testing.assert_array_equal(surface.int_block, i)
            for block in (surface.float_block, surface.int_block):
                assert block.flags.c_contiguous
                assert not block.flags.writeable
            assert surface == alone
            assert surface.to_wire() == alone.to_wire()
            assert hash(surface) == hash(alone)


@PROPERTY
@given(
    st.lists(
        blocks(len(SURFACE_FLOAT_COLUMNS), len(SURFACE_INT_COLUMNS), ALL_IV_FLAGS, 0), min_size=1, max_size=4
    )
)
def test_stacked_surfaces_are_adopted_as_each_segment_alone(segments: Any) -> None:
    _check_segments_against_each_alone(segments)


@PROPERTY
@given(
    st.sampled_from([0, 1, 2, 3, 6]).flatmap(
        lambda rows: st.lists(
            blocks(len(SURFACE_FLOAT_COLUMNS), len(SURFACE_INT_COLUMNS), ALL_IV_FLAGS, 0, rows),
            min_size=1,
            max_size=6,
        )
    )
)
def test_stacked_surfaces_of_one_width_are_adopted_as_each_segment_alone(segments: Any) -> None:
    # Expiries with the same strike count, as in most chain sets: all segments checked in one go.
    _check_segments_against_each_alone(segments)


def test_stacked_surfaces_need_flat_blocks_of_the_rows_the_bounds_give() -> None:
    floats, ints = _clean_surface()
    flat_floats, flat_ints, bounds = _stacked([(floats, ints), (floats, ints)])
    # Bounds from an int64 array's elements: the same surfaces as from plain ints.
    assert SurfaceColumns.adopt_stacked(flat_floats.copy(), flat_ints.copy(), list(np.array(bounds))) == (
        SurfaceColumns.adopt_stacked(flat_floats.copy(), flat_ints.copy(), bounds)
    )
    for bad_floats, bad_ints in (
        (flat_floats[1:].copy(), flat_ints.copy()),  # a value short
        (flat_floats.copy(), flat_ints[:-3].copy()),
        (flat_floats.reshape(11, 6).copy(), flat_ints.copy()),  # not flat
        (flat_floats.copy()[::-1], flat_ints.copy()),  # not C-contiguous
    ):
        with pytest.raises(ValueError, match="stacked blocks must be flat and C-contiguous"):
            SurfaceColumns.adopt_stacked(bad_floats, bad_ints, bounds)
    with pytest.raises(ValueError, match="blocks must be float64 and int64"):
        SurfaceColumns.adopt_stacked(flat_floats.astype(np.float32), flat_ints.copy(), bounds)


def test_stacked_surfaces_need_bounds_rising_from_zero_to_the_rows() -> None:
    floats, ints = _clean_surface()
    flat_floats, flat_ints, _ = _stacked([(floats, ints)])
    for bounds in ([], [1, 3], [0, 2, 1, 3]):
        with pytest.raises(ValueError, match="segment bounds must rise from 0"):
            SurfaceColumns.adopt_stacked(flat_floats.copy(), flat_ints.copy(), bounds)
    # Bounds that rise, but to other than the rows the blocks hold.
    with pytest.raises(ValueError, match="for 2 rows"):
        SurfaceColumns.adopt_stacked(flat_floats.copy(), flat_ints.copy(), [0, 2])
