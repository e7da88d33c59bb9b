"""Guards a mutation run found untested in service/metrics.py."""
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import BATCH_BUCKETS, ServiceMetrics


def _samples(m, family):
    return [s for fam in text_string_to_metric_families(m.render().decode()) if fam.name == family
            for s in fam.samples]


def test_build_info_puts_each_value_under_its_own_label():
    m = ServiceMetrics()
    m.set_build_info("1.2.3", "2.5.0+cpu", "cuda:0")
    (s,) = _samples(m, "dwserve_build_info")
    assert s.labels == {"version": "1.2.3", "torch": "2.5.0+cpu", "device": "cuda:0"} and s.value == 1


def test_decode_batch_size_is_bucketed_in_rows_like_batch_size():
    m = ServiceMetrics()
    m.decode_batch_size.labels("lfm2").observe(3)
    bounds = [s.labels["le"] for s in _samples(m, "dwserve_decode_batch_size") if s.name.endswith("_bucket")]
    assert bounds == [str(float(b)) for b in BATCH_BUCKETS] + ["+Inf"]
