#!/usr/bin/env bash
# How busy redis-server is in each phase of the bench's Redis table, and how often it waits:
# reads the scheduler's own counters of its main thread (/proc/<pid>/schedstat and the context
# switches in /proc/<pid>/status) at each phase's start and end, through the runner's
# LANEWAY_BENCH_PHASE_HOOK. Tells a drain that Redis cannot keep up with (on CPU all the time)
# from one where it sits idle between calls (many voluntary switches: nothing to read), or
# waits for a CPU that the worker holds (runnable but waiting).
#
#   crates/bench/scripts/redis-idle.sh [BENCH_BINARY] [WORKLOADS] [--quick]
#
# BENCH_BINARY defaults to target/release/laneway-bench (build it first:
# `cargo build --release -p laneway-bench`); WORKLOADS to `w2,w4` (`--only` of `laneway-bench
# run`; BENCHMARKS.md is left alone). Full sizes unless --quick. Linux only.
set -euo pipefail

bench=${1:-target/release/laneway-bench}
only=${2:-w2,w4}
quick=${3:-}
[ -x "$bench" ] || { echo "$bench not found: cargo build --release -p laneway-bench" >&2; exit 2; }

dir=$(mktemp -d /tmp/redis-idle.XXXXXX)
# begin/end: a snapshot (wall ns; run ns, runnable-waiting ns, timeslices; voluntary and
# involuntary switches); phase: the last end, named after the phase the runner records.
cat > "$dir/hook" <<HOOK
#!/bin/sh
snap() { date +%s%N; cat /proc/\$1/schedstat; grep ctxt_switches /proc/\$1/status | awk '{print \$2}' | paste -sd' '; }
case "\$1" in
  begin) snap "\$2" > $dir/begin ;;
  end) snap "\$2" > $dir/end ;;
  phase) cat $dir/begin $dir/end > "$dir/\$3.snap" ;;
esac
HOOK
chmod +x "$dir/hook"

LANEWAY_BENCH_PHASE_HOOK="$dir/hook" \
  "$bench" run $quick --only "$only" --results "$dir/results.json" > "$dir/run.log" 2>&1 || {
  echo "the bench run failed; its log: $dir/run.log" >&2
  exit 1
}

echo "redis-server's main thread per phase ($bench, --only $only${quick:+, $quick}; the last run of each figure)"
echo
echo "| phase | jobs/s | on CPU | runnable, waiting for a CPU | went idle (voluntary switches) per 1,000 jobs | preempted per 1,000 jobs |"
echo "|---|---:|---:|---:|---:|---:|"
python3 - "$dir" <<'PY'
import json, os, sys
d = sys.argv[1]
rows = json.load(open(os.path.join(d, "results.json")))["round_trips"]
for r in rows:
    path = os.path.join(d, r["phase"] + ".snap")
    if not os.path.exists(path):
        continue
    b0, b1, b2, e0, e1, e2 = [l.split() for l in open(path).read().split("\n") if l.strip()]
    wall = (int(e0[0]) - int(b0[0])) / 1e9
    run = (int(e1[0]) - int(b1[0])) / 1e9
    wait = (int(e1[1]) - int(b1[1])) / 1e9
    vol, invol = int(e2[0]) - int(b2[0]), int(e2[1]) - int(b2[1])
    jobs = r["jobs"]
    print(f"| {r['label']} | {jobs / wall:,.0f} | {run / wall:.2f} | {wait / wall:.2f} | "
          f"{vol * 1000 / jobs:.1f} | {invol * 1000 / jobs:.1f} |")
PY
echo
echo "(jobs/s here is over the hook's own window, which starts a little before the runner's"
echo " clock and ends a little after it; files in $dir)"
