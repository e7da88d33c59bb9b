"""Guards a mutation run found untested in models/depthwise/weight_layout.py: the
tap-major cache entry must keep the source weight's storage alive, or a later weight allocated
at the same address (same version) would be served the stale copy."""
import gc
import weakref

import numpy as np
import torch
from torch import nn

from models.depthwise.weight_layout import tap_major


def test_the_cache_entry_keeps_the_source_storage_alive():
    arr = np.random.default_rng(0).standard_normal((8, 1, 3, 3)).astype(np.float32)
    alive = weakref.ref(arr)              # torch.from_numpy's storage holds the array
    p = nn.Parameter(torch.from_numpy(arr))
    del arr
    copy = tap_major(p)
    assert copy.stride(0) == 1 and copy.data_ptr() != p.data_ptr()
    p.data = torch.randn(8, 1, 3, 3)      # as module.to() does: the old storage is let go ...
    gc.collect()
    assert alive() is not None            # ... but the cache entry still holds it: no address reuse
    fresh = tap_major(p)                  # and the new data is not served the old copy
    assert torch.equal(fresh, p) and fresh is not copy


def test_copies_says_whether_tap_major_relays_the_weight():
    from models.depthwise.weight_layout import copies
    w = nn.Parameter(torch.randn(8, 1, 3, 3))
    assert copies(w)                                   # channel-major: tap_major makes a copy
    assert not copies(tap_major(w))                    # already tap-major: passed as it is
    with torch.inference_mode():
        assert not copies(torch.randn(8, 1, 3, 3))     # inference tensors are never relaid


def test_as_stored_restores_what_was_there_nested_or_not():
    from models.depthwise import weight_layout
    with weight_layout.as_stored():
        with weight_layout.as_stored():
            pass
        assert weight_layout.ENABLED is False          # the outer block still runs as stored
    assert weight_layout.ENABLED is True
