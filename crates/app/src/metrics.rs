//! `GET /metrics`: every running tenant's job counters, queue depths and duration histograms in
//! the Prometheus text exposition format (0.0.4). Open, like `/healthz`: it carries counts, never
//! payloads or keys.

use std::fmt::Write as _;
use std::sync::Arc;

use app_core::metrics::{DURATION_BUCKETS_MS, HistogramSnapshot, KindSnapshot, StatusCounts};
use app_core::{JobStatus, Laneway, TenantMetrics};
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The route, mounted once at the process root.
pub fn routes() -> Router<Arc<Laneway>> {
    Router::new().route("/metrics", get(serve))
}

async fn serve(State(app): State<Arc<Laneway>>) -> impl IntoResponse {
    let body = render(&app.metrics().await);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body)
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `{a="x",b="y"}` from label pairs (values escaped).
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    format!("{{{}}}", inner.join(","))
}

/// Milliseconds as seconds, the base unit of the format (`5` → `0.005`, `600000` → `600`).
fn seconds(ms: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // reason: exact below 2^53 ms, about 285,000 years
    let s = ms as f64 / 1000.0;
    format!("{s}")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, pairs: &[(&str, &str)], h: &HistogramSnapshot) {
    for (bound, count) in DURATION_BUCKETS_MS.iter().zip(h.cumulative) {
        let le = seconds(*bound);
        let mut with_le = pairs.to_vec();
        with_le.push(("le", &le));
        let _ = writeln!(out, "{name}_bucket{} {count}", labels(&with_le));
    }
    let mut with_le = pairs.to_vec();
    with_le.push(("le", "+Inf"));
    let _ = writeln!(out, "{name}_bucket{} {}", labels(&with_le), h.count);
    let _ = writeln!(out, "{name}_sum{} {}", labels(pairs), seconds(h.sum_ms));
    let _ = writeln!(out, "{name}_count{} {}", labels(pairs), h.count);
}

fn depth(counts: &StatusCounts, status: JobStatus) -> u64 {
    match status {
        JobStatus::Queued => counts.queued,
        JobStatus::Processing => counts.processing,
        JobStatus::Done => counts.done,
        JobStatus::Failed => counts.failed,
        JobStatus::Cancelled => counts.cancelled,
    }
}

type KindCounter = (&'static str, &'static str, fn(&KindSnapshot) -> u64);
type TenantCounter = (&'static str, &'static str, fn(&TenantMetrics) -> u64);

const KIND_COUNTERS: [KindCounter; 6] = [
    ("laneway_jobs_enqueued_total", "Jobs accepted by an enqueue.", |k| k.enqueued),
    ("laneway_jobs_started_total", "Job attempts started.", |k| k.started),
    ("laneway_jobs_completed_total", "Jobs finished done.", |k| k.completed),
    (
        "laneway_jobs_failed_total",
        "Job attempts that ended in an error (then retried or dead-lettered).",
        |k| k.failed,
    ),
    ("laneway_jobs_retried_total", "Failed attempts scheduled again.", |k| k.retried),
    ("laneway_jobs_dead_lettered_total", "Jobs that failed for good.", |k| k.dead_lettered),
];

/// The whole exposition of `tenants`, one metric family after another.
pub fn render(tenants: &[TenantMetrics]) -> String {
    let mut out = String::new();
    for (name, help, get) in KIND_COUNTERS {
        header(&mut out, name, "counter", help);
        for t in tenants {
            for (kind, k) in &t.jobs.kinds {
                let _ = writeln!(
                    out,
                    "{name}{} {}",
                    labels(&[("tenant", t.tenant.as_str()), ("kind", kind.as_str())]),
                    get(k)
                );
            }
        }
    }
    header(&mut out, "laneway_queue_depth", "gauge", "Jobs in the tenant's store per kind and state.");
    for t in tenants {
        for (kind, counts) in &t.depths {
            for status in JobStatus::ALL {
                let l = labels(&[
                    ("tenant", t.tenant.as_str()),
                    ("kind", kind.as_str()),
                    ("state", status.as_str()),
                ]);
                let _ = writeln!(out, "laneway_queue_depth{l} {}", depth(counts, status));
            }
        }
    }
    for (name, help, pick) in [
        (
            "laneway_lane_wait_seconds",
            "Time from a job's submit to its first start.",
            (|k: &KindSnapshot| k.lane_wait) as fn(&KindSnapshot) -> HistogramSnapshot,
        ),
        ("laneway_job_run_seconds", "Time from an attempt's start to its outcome.", |k: &KindSnapshot| k.run),
    ] {
        header(&mut out, name, "histogram", help);
        for t in tenants {
            for (kind, k) in &t.jobs.kinds {
                histogram(
                    &mut out,
                    name,
                    &[("tenant", t.tenant.as_str()), ("kind", kind.as_str())],
                    &pick(k),
                );
            }
        }
    }
    let tenant_counters: [TenantCounter; 3] = [
        ("laneway_lease_expiries_total", "Leases that expired; their jobs were dispatched again.", |t| {
            t.jobs.lease_expiries
        }),
        (
            "laneway_fenced_completions_total",
            "Results or starts rejected because their lease was no longer current.",
            |t| t.jobs.fenced,
        ),
        ("laneway_limiter_waits_total", "Limiter acquisitions (capped work waiting for permits).", |t| {
            t.jobs.limiter_waits
        }),
    ];
    for (name, help, get) in tenant_counters {
        header(&mut out, name, "counter", help);
        for t in tenants {
            let _ = writeln!(out, "{name}{} {}", labels(&[("tenant", t.tenant.as_str())]), get(t));
        }
    }
    header(&mut out, "laneway_limiter_wait_seconds", "histogram", "Time spent waiting for limiter permits.");
    for t in tenants {
        histogram(
            &mut out,
            "laneway_limiter_wait_seconds",
            &[("tenant", t.tenant.as_str())],
            &t.jobs.limiter_wait,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use app_core::metrics::MetricsSnapshot;
    use app_core::{JobKind, TenantId};

    use super::*;

    fn tenant(id: &str, jobs: MetricsSnapshot) -> TenantMetrics {
        let counts = StatusCounts { queued: 2, processing: 1, done: 5, failed: 0, cancelled: 0 };
        TenantMetrics {
            tenant: TenantId::new(id).expect("tenant"),
            jobs,
            depths: vec![(JobKind::Chat, counts)],
        }
    }

    fn sample() -> MetricsSnapshot {
        let m = app_core::metrics::JobMetrics::new();
        m.record_enqueued(JobKind::Chat);
        m.record_started(JobKind::Chat, Some(7));
        m.record_completed(JobKind::Chat, 1_500);
        m.record_limiter_wait(3);
        m.snapshot()
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
        assert_eq!(labels(&[("tenant", "t\"1"), ("kind", "chat")]), r#"{tenant="t\"1",kind="chat"}"#);
    }

    #[test]
    fn bounds_and_sums_are_in_seconds() {
        assert_eq!(seconds(5), "0.005");
        assert_eq!(seconds(1_000), "1");
        assert_eq!(seconds(600_000), "600");
        assert_eq!(seconds(1_500), "1.5");
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = render(&[tenant("t1", sample())]);
        let mut declared = std::collections::BTreeSet::new();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().expect("name");
                let ty = lines.next().expect("a TYPE line after HELP");
                assert!(ty.starts_with(&format!("# TYPE {name} ")), "{ty}");
                declared.insert(name.to_owned());
                continue;
            }
            let series = line.split(['{', ' ']).next().expect("series");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| series.strip_suffix(s).filter(|f| declared.contains(*f)))
                .unwrap_or(series);
            assert!(declared.contains(family), "{line} has no HELP/TYPE before it");
            let value = line.rsplit(' ').next().expect("value");
            assert!(value.parse::<f64>().is_ok(), "{line}: value {value} is not a number");
        }
        for name in [
            "laneway_jobs_enqueued_total",
            "laneway_jobs_started_total",
            "laneway_jobs_completed_total",
            "laneway_jobs_failed_total",
            "laneway_jobs_retried_total",
            "laneway_jobs_dead_lettered_total",
            "laneway_queue_depth",
            "laneway_lane_wait_seconds",
            "laneway_job_run_seconds",
            "laneway_lease_expiries_total",
            "laneway_fenced_completions_total",
            "laneway_limiter_waits_total",
            "laneway_limiter_wait_seconds",
        ] {
            assert!(declared.contains(name), "{name} is missing");
        }
    }

    #[test]
    fn samples_carry_tenant_kind_and_state_labels_and_histograms_are_cumulative() {
        let text = render(&[tenant("t1", sample())]);
        for line in [
            r#"laneway_jobs_enqueued_total{tenant="t1",kind="chat"} 1"#,
            r#"laneway_jobs_completed_total{tenant="t1",kind="chat"} 1"#,
            r#"laneway_jobs_enqueued_total{tenant="t1",kind="upload"} 0"#,
            r#"laneway_queue_depth{tenant="t1",kind="chat",state="queued"} 2"#,
            r#"laneway_queue_depth{tenant="t1",kind="chat",state="processing"} 1"#,
            r#"laneway_lane_wait_seconds_bucket{tenant="t1",kind="chat",le="0.005"} 0"#,
            r#"laneway_lane_wait_seconds_bucket{tenant="t1",kind="chat",le="0.01"} 1"#,
            r#"laneway_lane_wait_seconds_bucket{tenant="t1",kind="chat",le="+Inf"} 1"#,
            r#"laneway_lane_wait_seconds_sum{tenant="t1",kind="chat"} 0.007"#,
            r#"laneway_job_run_seconds_bucket{tenant="t1",kind="chat",le="1"} 0"#,
            r#"laneway_job_run_seconds_bucket{tenant="t1",kind="chat",le="2.5"} 1"#,
            r#"laneway_job_run_seconds_bucket{tenant="t1",kind="chat",le="600"} 1"#,
            r#"laneway_job_run_seconds_count{tenant="t1",kind="chat"} 1"#,
            r#"laneway_limiter_waits_total{tenant="t1"} 1"#,
            r#"laneway_limiter_wait_seconds_count{tenant="t1"} 1"#,
            r#"laneway_fenced_completions_total{tenant="t1"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
    }
}
