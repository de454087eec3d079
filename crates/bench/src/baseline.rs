//! The Redis baselines of the same run: what the same Redis does with the fewest commands a
//! reliable queue needs (LPUSH to enqueue; LMOVE to an in-flight list to claim; LREM to finish),
//! through redis-rs, and `redis-benchmark` for LPUSH and EVALSHA; and the round trip of an idle
//! client at W3's pace, the floor under W3's latency.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lane_store::redis::{self, aio::MultiplexedConnection};

use crate::BenchResult;

const QUEUE: &str = "bench:base:queue";
const INFLIGHT: &str = "bench:base:inflight";

async fn connect(url: &str) -> BenchResult<MultiplexedConnection> {
    Ok(redis::Client::open(url)?.get_multiplexed_async_connection().await?)
}

fn rate(n: u64, started: Instant) -> f64 {
    #[allow(clippy::cast_precision_loss)] // counts far below 2^53
    let n = n as f64;
    n / started.elapsed().as_secs_f64()
}

/// LPUSH one at a time on one connection, each awaited: ops/s.
///
/// # Errors
/// A Redis error.
pub async fn lpush_serial(url: &str, total: u64, deadline: Instant) -> BenchResult<f64> {
    let mut conn = connect(url).await?;
    let started = Instant::now();
    let mut n = 0;
    while n < total && Instant::now() < deadline {
        let _: i64 = redis::cmd("LPUSH").arg(QUEUE).arg(n).query_async(&mut conn).await?;
        n += 1;
    }
    Ok(rate(n, started))
}

/// LPUSH unpipelined from `conns` connections at once: ops/s.
///
/// # Errors
/// A Redis error.
pub async fn lpush_concurrent(url: &str, total: u64, conns: usize, deadline: Instant) -> BenchResult<f64> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut connections = Vec::with_capacity(conns);
    for _ in 0..conns {
        connections.push(connect(url).await?);
    }
    let started = Instant::now();
    for mut conn in connections {
        let (next, done) = (next.clone(), done.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() >= deadline {
                    return Ok::<(), redis::RedisError>(());
                }
                let _: i64 = redis::cmd("LPUSH").arg(QUEUE).arg(i).query_async(&mut conn).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(rate(done.load(Ordering::SeqCst), started))
}

/// One PING every `1 / rate` s on one connection, `total` of them, each round trip timed: µs per
/// round trip. At W3's pace the client, the server and the vCPUs are idle between requests, so
/// this is the round trip W3 pays at each hop (a hand-off between idle processes costs more than
/// the back-to-back round trip `redis-benchmark` measures).
///
/// # Errors
/// A Redis error.
pub async fn ping_paced(url: &str, total: u64, rate: u64) -> BenchResult<Vec<f64>> {
    let mut conn = connect(url).await?;
    #[allow(clippy::cast_precision_loss)] // a rate of a few hundred per second
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    let mut round_trips = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        tick.tick().await;
        let sent = Instant::now();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        round_trips.push(sent.elapsed().as_secs_f64() * 1e6);
    }
    Ok(round_trips)
}

/// Enqueues `total` jobs as LPUSH pipelines of `batch` on one connection: jobs/s.
///
/// # Errors
/// A Redis error.
pub async fn enqueue_pipelined(url: &str, total: u64, batch: usize) -> BenchResult<f64> {
    let mut conn = connect(url).await?;
    let _: () = redis::cmd("DEL").arg(QUEUE).arg(INFLIGHT).query_async(&mut conn).await?;
    let started = Instant::now();
    let mut n = 0;
    while n < total {
        let mut pipe = redis::pipe();
        let end = (n + batch as u64).min(total);
        for i in n..end {
            pipe.cmd("LPUSH").arg(QUEUE).arg(format!("job-{i}")).ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
        n = end;
    }
    Ok(rate(total, started))
}

/// Drains the queue `enqueue_pipelined` filled: each of `conns` connections moves up to `batch`
/// jobs to the in-flight list in one pipeline (LMOVE), "runs" them (nothing), and removes them
/// in a second (LREM). Jobs/s from the first claim to the last removal.
///
/// # Errors
/// A Redis error.
pub async fn drain_pipelined(url: &str, batch: usize, conns: usize) -> BenchResult<(u64, f64)> {
    let done = Arc::new(AtomicU64::new(0));
    let mut connections = Vec::with_capacity(conns);
    for _ in 0..conns {
        connections.push(connect(url).await?);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in connections {
        let done = done.clone();
        tasks.spawn(async move {
            loop {
                let mut claim = redis::pipe();
                for _ in 0..batch {
                    claim.cmd("LMOVE").arg(QUEUE).arg(INFLIGHT).arg("RIGHT").arg("LEFT");
                }
                let claimed: Vec<Option<String>> = claim.query_async(&mut conn).await?;
                let ids: Vec<String> = claimed.into_iter().flatten().collect();
                if ids.is_empty() {
                    return Ok::<(), redis::RedisError>(());
                }
                let mut finish = redis::pipe();
                for id in &ids {
                    finish.cmd("LREM").arg(INFLIGHT).arg(1).arg(id).ignore();
                }
                let () = finish.query_async(&mut conn).await?;
                done.fetch_add(ids.len() as u64, Ordering::Relaxed);
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    let n = done.load(Ordering::SeqCst);
    Ok((n, rate(n, started)))
}

/// Runs `redis-benchmark` against `port` with `clients` clients and `pipeline` commands per
/// round trip, `requests` in all, and returns its requests per second. `command` is either
/// `-t name` or a raw command.
///
/// # Errors
/// When `redis-benchmark` is missing or its output cannot be read.
pub fn redis_benchmark(
    port: u16,
    clients: u32,
    requests: u64,
    pipeline: u32,
    command: &[&str],
) -> BenchResult<f64> {
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-c", &clients.to_string()])
        .args(["-n", &requests.to_string(), "-P", &pipeline.to_string(), "--csv"])
        .args(command)
        .output()
        .map_err(|e| format!("could not run redis-benchmark (it comes with redis-tools): {e}"))?;
    if !output.status.success() {
        return Err(format!("redis-benchmark failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    parse_benchmark_csv(&text).ok_or_else(|| format!("unexpected redis-benchmark output: {text}").into())
}

/// The `rps` of the first result line of `redis-benchmark --csv`.
fn parse_benchmark_csv(text: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with("\"test\""))
        .find_map(|l| l.split("\",\"").nth(1).and_then(|rps| rps.trim_matches('"').parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_benchmark_csv_gives_requests_per_second() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\"\n\"LPUSH\",\"531914.88\",\"1.4\"\n";
        assert_eq!(parse_benchmark_csv(csv), Some(531_914.88));
        assert_eq!(parse_benchmark_csv("garbage"), None);
    }
}
