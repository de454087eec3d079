//! Redis's own counters around a phase: socket reads (round trips), script calls, the pool's
//! PINGs and every command run (`INFO stats`, `INFO commandstats`), and `used_memory`.

use std::collections::BTreeMap;

use redis_harness::RedisServer;

use crate::report::RoundTrips;

/// The counters at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// `total_reads_processed`.
    pub reads: u64,
    /// `cmdstat_<command>` calls.
    pub calls: BTreeMap<String, u64>,
}

/// Commands the runner itself sends to read or reset the server: left out of the deltas.
const OURS: &[&str] = &["info", "flushall", "config|resetstat", "script|load", "command|docs"];

impl Counters {
    /// Reads the counters of `server`.
    #[must_use]
    pub fn read(server: &RedisServer) -> Self {
        let stats = server.command(&["INFO", "stats"]);
        let commands = server.command(&["INFO", "commandstats"]);
        Self::parse(&stats, &commands)
    }

    /// Parses `INFO stats` and `INFO commandstats` text.
    #[must_use]
    pub fn parse(stats: &str, commandstats: &str) -> Self {
        let reads = info_field(stats, "total_reads_processed").unwrap_or(0);
        let calls = commandstats
            .lines()
            .filter_map(|line| {
                let (name, rest) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
                Some((name.to_owned(), calls))
            })
            .collect();
        Self { reads, calls }
    }

    /// What happened between `self` (before) and `after`, per job.
    #[must_use]
    pub fn per_job(&self, after: &Self, phase: &str, label: &str, jobs: u64) -> RoundTrips {
        #[allow(clippy::cast_precision_loss)] // counts far below 2^53
        let per = |n: u64| if jobs == 0 { 0.0 } else { n as f64 / jobs as f64 };
        let delta: BTreeMap<&str, u64> = after
            .calls
            .iter()
            .filter(|(name, _)| !OURS.contains(&name.as_str()))
            .map(|(name, n)| (name.as_str(), n.saturating_sub(self.calls.get(name).copied().unwrap_or(0))))
            .filter(|(_, n)| *n > 0)
            .collect();
        let get = |name: &str| delta.get(name).copied().unwrap_or(0);
        let mut top: Vec<(String, f64)> =
            delta.iter().map(|(name, n)| ((*name).to_owned(), per(*n))).collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(5);
        RoundTrips {
            phase: phase.to_owned(),
            label: label.to_owned(),
            jobs,
            reads_per_job: per(after.reads.saturating_sub(self.reads)),
            scripts_per_job: per(get("evalsha") + get("eval") + get("evalsha_ro") + get("eval_ro")),
            pings_per_job: per(get("ping")),
            commands_per_job: per(delta.values().sum()),
            redis_cpu_us_per_job: 0.0,
            client_cpu_us_per_job: 0.0,
            top,
        }
    }
}

/// `used_memory` of `server`, in bytes.
#[must_use]
pub fn used_memory(server: &RedisServer) -> u64 {
    info_field(&server.command(&["INFO", "memory"]), "used_memory").unwrap_or(0)
}

fn info_field(info: &str, field: &str) -> Option<u64> {
    info.lines().find_map(|l| l.trim().strip_prefix(field)?.strip_prefix(':')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_count_round_trips_scripts_pings_and_every_command_per_job() {
        let before = Counters::parse(
            "# Stats\r\ntotal_reads_processed:10\r\n",
            "cmdstat_evalsha:calls=5,usec=1\r\ncmdstat_info:calls=9,usec=1\r\n",
        );
        let after = Counters::parse(
            "# Stats\r\ntotal_reads_processed:410\r\n",
            "cmdstat_evalsha:calls=205,usec=1\r\ncmdstat_ping:calls=200,usec=1\r\ncmdstat_hset:calls=600,usec=1\r\n\
             cmdstat_info:calls=11,usec=1\r\ncmdstat_unwatch:calls=200,usec=1\r\n",
        );
        let t = before.per_job(&after, "w2.redis", "W2 drain", 200);
        assert!((t.reads_per_job - 2.0).abs() < 1e-9);
        assert!((t.scripts_per_job - 1.0).abs() < 1e-9);
        assert!((t.pings_per_job - 1.0).abs() < 1e-9);
        assert!((t.commands_per_job - 6.0).abs() < 1e-9, "info is the runner's own: {t:?}");
        assert_eq!(t.top[0], ("hset".to_owned(), 3.0));
    }
}
