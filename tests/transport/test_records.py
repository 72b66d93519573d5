"""records.py offsets and helpers; ring.py geometry derived from shm."""
from __future__ import annotations

import numpy as np

from appliance.transport import records as R
from appliance.transport import ring, shm


def test_header_offsets_come_from_the_dtypes():
    for name in ("rtype", "venue", "flags", "instrument", "origin_tsc", "publish_tsc"):
        for dt in R.RECORD_DTYPES.values():
            assert dt.fields[name][1] == R.field_offset(R.HEADER, name)
    assert (R.RTYPE_OFF, R.VENUE_OFF, R.FLAGS_OFF, R.INSTRUMENT_OFF) == (8, 9, 10, 12)
    assert R.TYPE_WORD_OFF == R.RTYPE_OFF
    for dt in (R.NEW_ORDER, R.CANCEL, R.REPLACE, R.MASS_CANCEL, R.RECONCILE):
        assert (dt.fields["clord_id"][1], dt.fields["strategy"][1], dt.fields["session"][1]) == \
            (R.ORDER_CLORD_OFF, R.ORDER_STRATEGY_OFF, R.ORDER_SESSION_OFF)
    for dt in (R.ACK, R.FILL, R.REJECT):
        assert (dt.fields["clord_id"][1], dt.fields["orig_clord_id"][1], dt.fields["strategy"][1],
                dt.fields["session"][1]) == (R.EXEC_CLORD_OFF, R.EXEC_ORIG_CLORD_OFF,
                                             R.EXEC_STRATEGY_OFF, R.EXEC_SESSION_OFF)


def test_record_seqs_reads_the_seqlock_word_of_one_record_or_a_batch():
    rows = np.zeros((3, R.MD_RECORD_SIZE), np.uint8)
    rows.view(R.L2_UPDATE)[:, 0]["ver"] = [0, 2, 2 * 41 + 2]
    assert R.record_seqs(rows).tolist() == [-1, 0, 41]
    assert int(R.record_seqs(rows[2])) == 41 == R.record_seq(2 * 41 + 2)


def test_ring_consumer_table_follows_the_shm_header():
    assert ring.CONSUMER_TABLE == shm.HEADER_BYTES
    assert ring.CONSUMER_TABLE + ring.MAX_CONSUMERS * ring.CUR_WORDS * 8 <= ring.DATA_OFFSET
