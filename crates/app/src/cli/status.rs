//! `laneway status`: queue depths per kind and state, and the lanes (active job, lease deadline,
//! waiting jobs with their positions) of one tenant, as text tables; `--watch` refreshes them.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use app_core::LanewayClient;
use serde_json::{Value, json};

use super::{explain, now_ms, table};

/// Lanes fetched per snapshot.
const LANES_SHOWN: usize = 100;
/// Job states, in the order the table shows them.
const STATES: [&str; 5] = ["queued", "processing", "done", "failed", "cancelled"];

/// How `status` shows what it fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusOutput {
    /// One snapshot as text tables.
    Once,
    /// A snapshot every second until Ctrl-C.
    Watch,
    /// The raw JSON once.
    Json,
}

/// Runs `laneway status`.
pub async fn run(client: &LanewayClient, output: StatusOutput) -> anyhow::Result<()> {
    match output {
        StatusOutput::Json => {
            let (queues, lanes) = fetch(client).await?;
            println!("{}", serde_json::to_string_pretty(&json!({"queues": queues, "lanes": lanes}))?);
        }
        StatusOutput::Once => {
            let (queues, lanes) = fetch(client).await?;
            print!("{}", render(&queues, &lanes, now_ms()));
        }
        StatusOutput::Watch => watch(client).await?,
    }
    Ok(())
}

async fn fetch(client: &LanewayClient) -> anyhow::Result<(Value, Value)> {
    let queues = client.queues().await.map_err(|e| explain(&e))?;
    let lanes = client.lanes(LANES_SHOWN).await.map_err(|e| explain(&e))?;
    Ok((queues, lanes))
}

async fn watch(client: &LanewayClient) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal();
    let mut first = true;
    loop {
        // A failed fetch is shown and retried: the server may be restarting.
        let snapshot = match fetch(client).await {
            Ok((queues, lanes)) => render(&queues, &lanes, now_ms()),
            Err(e) => format!("laneway status: {e:#}\n"),
        };
        let mut out = std::io::stdout().lock();
        if terminal {
            // Clear the screen and go home, then draw the snapshot in place.
            writeln!(out, "\x1b[2J\x1b[H{snapshot}(refreshing every second; Ctrl-C stops)")?;
        } else {
            if !first {
                writeln!(out)?;
            }
            write!(out, "{snapshot}")?;
        }
        out.flush()?;
        drop(out);
        first = false;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// `lease_deadline_ms` relative to `now`: `in 4.2s` or `expired 1.0s ago`.
fn deadline(deadline_ms: u64, now: u64) -> String {
    #[allow(clippy::cast_precision_loss, reason = "milliseconds shown to a tenth of a second")]
    let secs = |ms: u64| ms as f64 / 1000.0;
    if deadline_ms >= now {
        format!("in {:.1}s", secs(deadline_ms - now))
    } else {
        format!("expired {:.1}s ago", secs(now - deadline_ms))
    }
}

/// The snapshot as text: a header line, the queue table, the lane table.
fn render(queues: &Value, lanes: &Value, now: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "tenant {}  backend {}", text(&queues["tenant"]), text(&queues["backend"]));
    out.push('\n');
    let kinds = queues["kinds"].as_array().cloned().unwrap_or_default();
    let mut headers = vec!["KIND"];
    headers.extend(STATES.iter().map(|s| match *s {
        "queued" => "QUEUED",
        "processing" => "PROCESSING",
        "done" => "DONE",
        "failed" => "FAILED",
        _ => "CANCELLED",
    }));
    let rows: Vec<Vec<String>> = kinds
        .iter()
        .map(|k| {
            std::iter::once(text(&k["kind"]))
                .chain(STATES.iter().map(|s| k.get(*s).map_or_else(|| "0".to_owned(), text)))
                .collect()
        })
        .collect();
    out.push_str(&table(&headers, &rows));
    out.push('\n');
    let lane_list = lanes["lanes"].as_array().cloned().unwrap_or_default();
    if lane_list.is_empty() {
        out.push_str("no lanes with work\n");
        return out;
    }
    let mut rows = Vec::new();
    for lane in &lane_list {
        let active = &lane["active"];
        let (job, lease) = if active.is_null() {
            ("-".to_owned(), "-".to_owned())
        } else {
            (
                text(&active["job_id"]),
                active["lease_deadline_ms"].as_u64().map_or_else(|| "-".into(), |d| deadline(d, now)),
            )
        };
        let waiting: Vec<String> = lane["waiting"]
            .as_array()
            .map(|w| w.iter().map(|j| format!("{}:{}", text(&j["position"]), text(&j["job_id"]))).collect())
            .unwrap_or_default();
        let waiting = if waiting.is_empty() { "-".to_owned() } else { waiting.join(" ") };
        rows.push(vec![text(&lane["lane_id"]), job, lease, waiting]);
    }
    out.push_str(&table(&["LANE", "ACTIVE JOB", "LEASE", "WAITING (position:job)"], &rows));
    if !lanes["next_after"].is_null() {
        let _ = writeln!(out, "(first {LANES_SHOWN} lanes shown)");
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::render;

    #[test]
    fn a_snapshot_shows_depths_and_each_lane_with_its_waiting_jobs() {
        let queues = json!({"tenant": "default", "backend": "inline", "kinds": [
            {"kind": "chat", "queued": 1, "processing": 1, "done": 3, "failed": 0, "cancelled": 0}]});
        let lanes = json!({"tenant": "default", "next_after": null, "lanes": [{"lane_id": "student:s1:main",
            "active": {"job_id": "j1", "epoch": 1, "lease_deadline_ms": 12_000},
            "waiting": [{"job_id": "j2", "position": 1}]}]});
        let text = render(&queues, &lanes, 10_000);
        assert!(text.contains("chat  1       1           3"), "{text}");
        assert!(text.contains("student:s1:main  j1          in 2.0s  1:j2"), "{text}");
    }
}
