"""Log-linear histograms: buckets, percentiles from one sample up, merging."""
from __future__ import annotations

import numpy as np
import pytest

from appliance.transport import hist


def _row(values):
    r = hist.new_row()
    for v in values:
        hist.record(r, v)
    return r


def test_one_sample_reads_back_exactly_at_every_percentile():
    p = hist.percentiles(_row([123_456]))
    assert p == {0.5: 123_456, 0.99: 123_456, 0.999: 123_456}


def test_two_and_three_samples_take_the_rank_ceil_q_n():
    p = hist.percentiles(_row([300, 900_000]), (0.5, 0.99))
    assert 300 <= p[0.5] <= 300 * 1.125             # rank 1: the bucket of 300 (upper edge)
    assert p[0.99] == 900_000                       # rank 2: clamped to the max
    p = hist.percentiles(_row([7, 5000, 40_000_000]), (0.3, 0.34, 0.5, 0.99))
    assert p[0.3] == 7                              # rank 1: exact below 8
    assert 5000 <= p[0.34] <= 5000 * 1.125          # rank 2: the bucket of 5000
    assert p[0.5] == p[0.34]
    assert p[0.99] == 40_000_000


def test_percentile_is_within_one_bucket_above_the_true_value():
    rng = np.random.default_rng(7)
    vals = rng.integers(1, 10**9, 10_000)
    r = _row(vals)
    for q in (0.5, 0.9, 0.99):
        true = int(np.sort(vals)[int(np.ceil(q * len(vals))) - 1])
        got = hist.percentiles(r, (q,))[q]
        assert true <= got <= true * 1.125 + 1


def test_empty_histogram_has_no_percentiles_and_summary_says_count_zero():
    r = hist.new_row()
    assert hist.percentiles(r) == {0.5: None, 0.99: None, 0.999: None}
    s = hist.summary(r)
    assert s["count"] == 0 and s["p50"] is None and s["max"] is None


def test_negative_values_count_as_zero_and_buckets_cover_int64():
    r = _row([-5])
    assert hist.percentiles(r, (0.5,))[0.5] == 0
    assert hist.bucket(2**62) < hist.BUCKETS


@pytest.mark.parametrize("v", [0, 1, 7, 8, 9, 15, 16, 1000, 123_456_789, 2**40 + 3])
def test_bucket_bounds_contain_the_value(v):
    k = hist.bucket(v)
    assert hist.bucket_lo(k) <= v < hist.bucket_lo(k + 1)


def test_merge_adds_counts_and_keeps_extremes():
    m = hist.merge([_row([10, 20]), _row([5, 1000])])
    s = hist.summary(m)
    assert s["count"] == 4 and s["min"] == 5 and s["max"] == 1000 and s["mean"] == 258.75
