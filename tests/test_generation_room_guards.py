"""Guards a mutation run found untested in service/generation_room.py."""
import collections
from types import SimpleNamespace

from service.generation_room import free_rows, would_queue


def test_an_over_full_engine_has_no_free_rows_and_queues_no_more_than_pending():
    """free_rows clamps at 0: an engine holding more sequences than its capacity (a capacity
    lowered under live rows) gives no negative room, which would_queue would count as extra waiters."""
    engine = SimpleNamespace(capacity=2, rows=[object(), object(), object()], joining=[])
    assert free_rows(engine) == 0
    assert would_queue(collections.Counter({"auto": 1}), {"auto": engine}, "auto", 2) == 1


def test_the_default_policy_making_its_engine_takes_no_other_engine_slot():
    """With no engine live, the default policy's engine is always made and uses none of the
    OTHER_ENGINES slots: one other policy may still make its own, so nothing waits."""
    pending = collections.Counter({"auto": 1, "native": 1})        # the default's first
    assert would_queue(pending, {}, "auto", 4) == 0
    assert would_queue(collections.Counter({"auto": 1, "native": 1, "slice_sum": 1}), {}, "auto", 4) == 1
