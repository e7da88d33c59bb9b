"""The dwserve Grafana dashboard, as code (grafana-foundation-sdk, Grafana's own builder library).

    python deploy/grafana/dashboard.py            # rewrite deploy/grafana/dashboards/dwserve.json
    python deploy/grafana/dashboard.py --check    # exit 1 if the committed JSON is stale

The committed JSON is what Grafana provisions (docker compose, k8s); tests/test_deploy_grafana.py
fails when it drifts from this file, and tests/test_topology.py runs every query below against a
real Prometheus scraping two live dwserve processes.

Every panel compares the two variants side by side: `variant` (before = per_group, after = auto)
is added by the scrape config (deploy/prometheus/prometheus.yml), `impl` is the policy a request
ran under (a request can override the server default with parameters.depthwise_impl).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as pb
from grafana_foundation_sdk.builders import stat as sb
from grafana_foundation_sdk.builders import timeseries as tb
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

OUT = Path(__file__).resolve().parent / "dashboards" / "dwserve.json"
UID = "dwserve"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Label filter shared by every query: the dashboard's model and instance variables.
SEL = 'model=~"$model", instance=~"$instance"'
RI = "$__rate_interval"
# Each variant's server default (docker/docker-compose.yml DWSERVE_DEPTHWISE_IMPL).
BEFORE_IMPL, AFTER_IMPL = "per_group", "auto"


def side(series: str, variant: str, impl: str, by: str, selector: str) -> str:
    return f'max by ({by}) ({series}{{variant="{variant}", impl="{impl}", {selector}}})'


def before_over_after(series: str, by: str, selector: str) -> str:
    """PromQL: `series` of the before variant under its default impl over the after variant's
    under its own, per `by` (the before/after stats)."""
    return f"{side(series, 'before', BEFORE_IMPL, by, selector)} / {side(series, 'after', AFTER_IMPL, by, selector)}"


def own_impls(series: str, by: str, selector: str) -> str:
    """PromQL: `series` of each variant under its own default impl, per variant and `by`."""
    return (f"{side(series, 'before', BEFORE_IMPL, 'variant, ' + by, selector)}"
            f" or {side(series, 'after', AFTER_IMPL, 'variant, ' + by, selector)}")


def q(expr: str, legend: str, ref: str = "A") -> pb.Dataquery:
    return pb.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS)


def ts(title: str, desc: str, unit: str, *queries: pb.Dataquery, w: int = 12) -> tb.Panel:
    """A time series panel, legend as a table with mean/max so before/after reads as numbers."""
    panel = (
        tb.Panel().title(title).description(desc).unit(unit).datasource(DS).height(8).span(w)
        .line_width(1).fill_opacity(10).show_points(cm.VisibilityMode.NEVER)
        .legend(cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.TABLE)
                .placement(cm.LegendPlacement.BOTTOM).show_legend(True).calcs(["mean", "max"]))
    )
    for i, query in enumerate(queries):
        panel = panel.with_target(query.ref_id(chr(ord("A") + i)))
    return panel


def stat(title: str, desc: str, unit: str, query: pb.Dataquery, w: int = 6) -> sb.Panel:
    return (
        sb.Panel().title(title).description(desc).unit(unit).datasource(DS).height(5).span(w)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(query)
    )


# An idle window (no requests) gives these no point, not NaN: Grafana draws NaN as "NaN" or
# as 0, a 0 s latency that never was (the recording rules do the same, dwserve.rules.yml).
def hq(phi: float, metric: str, by: str) -> str:
    """phi-quantile of a histogram, aggregated over replicas (sum of bucket rates, then quantile).
    `>= 0` drops the NaN of zero rates; every real latency or batch size passes it."""
    return f"histogram_quantile({phi}, sum by (le, {by}) (rate({metric}_bucket{{{SEL}}}[{RI}]))) >= 0"


def mean(metric: str, by: str) -> str:
    """Mean of a histogram over the rate window: rate(sum) / rate(count), the count > 0."""
    return (f"sum by ({by}) (rate({metric}_sum{{{SEL}}}[{RI}]))"
            f" / (sum by ({by}) (rate({metric}_count{{{SEL}}}[{RI}])) > 0)")


def variables() -> list:
    ds = db.DatasourceVariable("datasource").id("datasource").label("Data source").type("prometheus")
    model = (
        db.QueryVariable("model").id("model").label("Model").datasource(DS)
        .query("label_values(dwserve_requests_total, model)")
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True).include_all(True).all_value(".*")
    )
    instance = (
        db.QueryVariable("instance").id("instance").label("Instance").datasource(DS)
        .query('label_values(dwserve_requests_total{model=~"$model"}, instance)')
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True).include_all(True).all_value(".*")
    )
    return [ds, model, instance]


def build() -> db.Dashboard:
    vmi = "variant, model, impl"
    d = (
        db.Dashboard("dwserve: depthwise before/after").uid(UID).tags(["dwserve", "depthwise"])
        .description("dwserve serving two depthwise implementations side by side: "
                     "before = per_group (C convs + cat), after = auto (slice-sum/fused/native).")
        .refresh("5s").time("now-15m", "now").timezone("browser").tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .editable()
        .variables(variables())
    )
    d = d.with_row(db.Row("Before vs after at a glance"))
    # The stats below read each variant under its OWN default impl (BEFORE_IMPL, AFTER_IMPL):
    # the launch gauge of an impl is never cleared, so one request overriding depthwise_impl on
    # the after server would leave e.g. a per_group series there for good, and a max over every
    # impl would then read it instead of the after variant's own.
    # The depthwise share alike: an override's share stays in the 5m recording rule.
    d = d.with_panel(stat(
        "Kernel launches per forward: before / after",
        f"How many times more kernels (aten ops on CPU, CUDA kernels on GPU) the before variant "
        f"launches per forward under its default impl ({BEFORE_IMPL}) than the after variant under "
        f"its own ({AFTER_IMPL}), per model; requests that override the impl do not move it.", "x",
        q(before_over_after("dwserve_kernel_launches_per_forward", "model, kind", SEL), "{{model}} {{kind}}"), w=5))
    d = d.with_panel(stat(
        "Kernel launches per generated token: before / after",
        f"The same ratio for generation: launches of one pure decode step (continuous batching, "
        f"no prefill in it) per row it decoded, before ({BEFORE_IMPL}) / after ({AFTER_IMPL}). "
        "Each gauge is its variant's last counted step, whose rows may differ (per_group's "
        "launches per token fall as rows share a step). On GPU read cuda_kernels: with CUDA "
        "graphs a step is one replay, and its aten ops are only the host's sampling.", "x",
        q(before_over_after("dwserve_kernel_launches_per_token", "model, kind", SEL), "{{model}} {{kind}}"), w=5))
    d = d.with_panel(stat(
        "p99 latency speed-up: before / after",
        f"p99 one-shot request latency (OIP infer, classify) of before ({BEFORE_IMPL}) divided by "
        f"after ({AFTER_IMPL}) over the last 5 minutes, per model and route (recording rule "
        "dwserve:request_duration_seconds:p99_5m).", "x",
        q(before_over_after("dwserve:request_duration_seconds:p99_5m", "model, route", 'model=~"$model"'),
          "{{model}} {{route}}"), w=5))
    d = d.with_panel(stat(
        "Depthwise share of compute",
        f"Mean time inside depthwise ops per sampled forward / mean compute time per forward, "
        f"before under {BEFORE_IMPL}, after under {AFTER_IMPL} (recording rule "
        "dwserve:depthwise_share:ratio_rate5m).", "percentunit",
        q(own_impls("dwserve:depthwise_share:ratio_rate5m", "model", 'model=~"$model"'),
          "{{variant}} {{model}}"), w=4))
    d = d.with_panel(stat(
        "Build and models", "dwserve_build_info of each scraped process, and dwserve_model_info: what "
        "each served name runs (the lfm2 slot may hold an LFM2, LFM2-MoE or LFM3; K = its conv kernel).",
        "none",
        q('count by (variant, version) (dwserve_build_info{instance=~"$instance"})',
          "{{variant}} {{version}}"), w=5).with_target(
        q(f"count by (variant, model, architecture, conv_kernel_size, dtype) (dwserve_model_info{{{SEL}}})",
          "{{variant}} {{model}}: {{architecture}} K={{conv_kernel_size}} {{dtype}}", "B")))

    d = d.with_row(db.Row("Traffic and latency"))
    d = d.with_panel(ts(
        "Request rate", "Requests per second by variant, model, impl and HTTP status.", "reqps",
        q(f"sum by ({vmi}, status) (rate(dwserve_requests_total{{{SEL}}}[{RI}]))",
          "{{variant}} {{model}} {{impl}} {{status}}")))
    vmir = "variant, model, impl, route"
    d = d.with_panel(ts(
        "Latency by impl and route: p50 / p95 / p99",
        "End-to-end request latency (queue + compute + encode) from the histogram, per route: "
        "infer (OIP REST and gRPC) and classify are one forward each; generate is a whole "
        "generation (seconds by nature: its SLO is time to first token). Rejections (4xx, 499, "
        "503) are counted in the request rate, not here.", "s",
        q(hq(0.5, "dwserve_request_duration_seconds", vmir), "p50 {{variant}} {{model}} {{route}} {{impl}}"),
        q(hq(0.95, "dwserve_request_duration_seconds", vmir), "p95 {{variant}} {{model}} {{route}} {{impl}}"),
        q(hq(0.99, "dwserve_request_duration_seconds", vmir), "p99 {{variant}} {{model}} {{route}} {{impl}}")))
    d = d.with_panel(ts(
        "Queue vs compute time (mean)",
        "Mean time waiting in the batching queue vs mean forward time. Queue-bound: add replicas "
        "or batch more; compute-bound: look at the depthwise share and the impl.", "s",
        q(mean("dwserve_queue_duration_seconds", "variant, model"), "queue {{variant}} {{model}}"),
        q(mean("dwserve_compute_duration_seconds", vmi), "compute {{variant}} {{model}} {{impl}}"),
        q(mean("dwserve_depthwise_duration_seconds", vmi), "depthwise {{variant}} {{model}} {{impl}}")))
    d = d.with_panel(ts(
        "p99 latency per impl (5m, recording rule)",
        "dwserve:request_duration_seconds:p99_5m, one-shot routes (infer, classify): the series "
        "the latency SLO alert (2.5 s, a bucket bound) reads.", "s",
        q('dwserve:request_duration_seconds:p99_5m{model=~"$model"}', "{{variant}} {{model}} {{route}} {{impl}}")))

    d = d.with_row(db.Row("Depthwise: where the time and the launches go"))
    d = d.with_panel(ts(
        "Depthwise share of compute", "Share of forward time spent in depthwise ops (sampled, "
        "device-synchronised). The per_group baseline spends most of its time here.", "percentunit",
        q('dwserve:depthwise_share:ratio_rate5m{model=~"$model"}', "{{variant}} {{model}} {{impl}}")))
    d = d.with_panel(ts(
        "Kernel launches per request",
        "rate(dwserve_kernel_launches_total) / one-shot requests (infer, classify: the requests "
        "whose forwards count launches; generations count none), recording rule; batching "
        "lowers it, a regression to per_group raises it (the launch alert reads launches per "
        "forward instead, dwserve:kernel_launches_per_forward:ratio_rate5m: a load drop that "
        "shrinks batches raises this one with nothing regressed).", "short",
        q('dwserve:kernel_launches_per_request:ratio_rate5m{model=~"$model"}',
          "{{variant}} {{model}} {{impl}} {{kind}}")))
    d = d.with_panel(ts(
        "Kernel launches per forward: before vs after",
        "Gauge set by the service from a counted forward: aten ops dispatched (every device) and "
        "CUDA kernels (GPU). per_group grows with channels; slice-sum/fused do not.", "short",
        q(f"max by ({vmi}, kind) (dwserve_kernel_launches_per_forward{{{SEL}}})",
          "{{variant}} {{model}} {{impl}} {{kind}}")))
    d = d.with_panel(ts(
        "Kernel launches per generated token: before vs after",
        "Gauge set by the service from a counted pure decode step of continuous batching (no "
        "prefill in it): its launches / the rows it decoded, aten ops (every device) and CUDA "
        "kernels (GPU; with CUDA graphs the replay's kernels). per_group launches O(channels) "
        "per conv layer per step; slice-sum/fused a few. Not in kernel_launches_total.", "short",
        q(f"max by ({vmi}, kind) (dwserve_kernel_launches_per_token{{{SEL}}})",
          "{{variant}} {{model}} {{impl}} {{kind}}")))
    d = d.with_panel(ts(
        "Batch size", "Rows per forward formed by the dynamic batcher (mean, and p95 rounded up "
        "to a whole row: histogram_quantile interpolates inside a bucket, so batches of 1 "
        "would read 0.95), and generations advanced per decode step by continuous batching "
        "(/v1/generate).", "short",
        q(mean("dwserve_batch_size", "variant, model"), "mean {{variant}} {{model}}"),
        q(f'ceil({hq(0.95, "dwserve_batch_size", "variant, model")})', "p95 {{variant}} {{model}}"),
        q(mean("dwserve_decode_batch_size", "variant, model"), "generations/step {{variant}} {{model}}"), w=24))

    d = d.with_row(db.Row("Errors and load"))
    d = d.with_panel(ts(
        "Errors by status", "Non-2xx responses per second: 4xx are bad requests (499: the client "
        "closed the request before its answer, e.g. a gRPC deadline), 503 means the queue was "
        "full (load shed), other 5xx are bugs.", "reqps",
        q(f'sum by (variant, model, status) (rate(dwserve_requests_total{{status!~"2..", {SEL}}}[{RI}]))',
          "{{variant}} {{model}} {{status}}")))
    d = d.with_panel(ts(
        "In-flight requests", "Requests accepted and not yet answered (queued + computing).", "short",
        q(f"sum by (variant, model) (dwserve_inflight_requests{{{SEL}}})", "{{variant}} {{model}}")))

    d = d.with_row(db.Row("Generation (lfm2)"))
    d = d.with_panel(ts(
        "Generated and prefix-cached tokens/s", "Tokens produced per second by /v1/generate (and the "
        "OpenAI routes), and prompt tokens per second restored from the prefix cache instead of "
        "prefilled.", "short",
        q(f"sum by ({vmi}) (rate(dwserve_generated_tokens_total{{{SEL}}}[{RI}]))",
          "generated {{variant}} {{model}} {{impl}}"),
        q(f"sum by ({vmi}) (rate(dwserve_prefix_cached_tokens_total{{{SEL}}}[{RI}]))",
          "prefix-cached {{variant}} {{model}} {{impl}}", "B"), w=8))
    d = d.with_panel(ts(
        "Time to first token: p50 / p95 / p99", "Request start to first token on every generation "
        "route (queueing for a decode row + prefill). p99 is the recording rule the generation "
        "SLO alert (2.5 s) reads.", "s",
        q(hq(0.5, "dwserve_time_to_first_token_seconds", vmi), "p50 {{variant}} {{impl}}"),
        q(hq(0.95, "dwserve_time_to_first_token_seconds", vmi), "p95 {{variant}} {{impl}}"),
        q('dwserve:time_to_first_token_seconds:p99_5m{model=~"$model"}', "p99 {{variant}} {{impl}}"), w=8))
    d = d.with_panel(ts(
        "Time per output token (mean)", "Decode step latency: one conv1d_decode_step per conv "
        "layer per token.", "s",
        q(mean("dwserve_time_per_output_token_seconds", vmi), "{{variant}} {{impl}}"), w=8))
    return d


def render() -> str:
    """The dashboard as the JSON Grafana provisions (stable key order, trailing newline)."""
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if the committed JSON is stale")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run `python deploy/grafana/dashboard.py`", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
