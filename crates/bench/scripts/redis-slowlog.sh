#!/usr/bin/env bash
# Times every command and script call inside redis-server during each phase of a quick bench run,
# with Redis's own SLOWLOG (threshold 0): how long Redis took for each call, with no profiler
# attached. At W3's pace Redis is idle between calls and runs each with cold caches, so a script's
# time there is far above its share of a drain, and it is part of W3's latency (Redis answers the
# blocked worker only when the submit's script ends). callgrind (redis-instructions.sh) counts
# instructions, which do not see cold caches.
#
#   crates/bench/scripts/redis-slowlog.sh [BENCH_BINARY] [WORKLOADS]
#
# BENCH_BINARY defaults to target/release/laneway-bench; WORKLOADS to `w3` (`--only` of
# `laneway-bench run`; always a --quick run, and BENCHMARKS.md is left alone). Prints, per phase,
# each script (named by its first key and its number of keys) and each command with its count
# and the p50, p90 and mean of its time in µs. Commands a script runs are logged on their own as
# well, and their time is inside the script's.
set -euo pipefail
bench=${1:-target/release/laneway-bench}
only=${2:-w3}
[ -x "$bench" ] || { echo "$bench not found: cargo build --release -p laneway-bench" >&2; exit 2; }
command -v redis-cli >/dev/null || { echo "redis-cli not found" >&2; exit 2; }
command -v ss >/dev/null || { echo "ss not found (iproute2)" >&2; exit 2; }
dir=$(mktemp -d /tmp/redis-slowlog.XXXXXX)
mkdir "$dir/phases"
# The phase hook: the runner calls it with the event and redis-server's pid; the port is found
# from the pid. Logging starts at a phase's begin and is read at its end; the dump is named after
# the phase when the runner records it (runs it does not record leave unnamed dumps, ignored).
cat > "$dir/hook" <<HOOK
#!/bin/sh
port=\$(ss -ltnpH | grep "pid=\$2," | awk '{print \$4}' | sed 's/.*://' | head -n 1)
cli() { redis-cli -p "\$port" "\$@" >/dev/null; }
case "\$1" in
  begin)
    cli config set slowlog-max-len 1000000
    cli config set slowlog-log-slower-than 0
    cli slowlog reset ;;
  end)
    n=\$(( \$(cat "$dir/n" 2>/dev/null || echo 0) + 1 )); echo \$n > "$dir/n"
    redis-cli --json -p "\$port" slowlog get -1 > "$dir/phases/dump-\$n.json"
    cli config set slowlog-log-slower-than 10000 ;;
  phase)
    n=\$(cat "$dir/n"); mv "$dir/phases/dump-\$n.json" "$dir/phases/\$3.json" ;;
esac
HOOK
chmod +x "$dir/hook"

LANEWAY_BENCH_PHASE_HOOK="$dir/hook" \
  "$bench" run --quick --only "$only" --results "$dir/results.json" > "$dir/run.log" 2>&1 || {
  echo "the bench run failed; its log: $dir/run.log" >&2
  exit 1
}

echo "time inside redis-server per call, by Redis's SLOWLOG ($bench, --only $only, quick sizes)"
python3 - "$dir" <<'PY'
import collections, json, os, statistics, sys
d = sys.argv[1]
rows = json.load(open(os.path.join(d, "results.json")))["round_trips"]
for r in rows:
    path = os.path.join(d, "phases", r["phase"] + ".json")
    if not os.path.exists(path):
        continue
    calls = collections.defaultdict(list)
    for entry in json.load(open(path)):
        micros, argv = entry[2], entry[3]
        name = argv[0].upper()
        if name in ("SLOWLOG", "CONFIG", "INFO", "HELLO"):
            continue  # the hook's and the runner's own
        if name in ("EVALSHA", "EVAL") and len(argv) > 2:
            keys = int(argv[2])
            first = argv[3].split("}:")[-1] if keys else "-"
            # One job's or lane's key names the script, not the job: one row per script.
            for kind in ("job:", "lane:"):
                if first.startswith(kind):
                    first = kind + "…"
            name = f"{name} {argv[1][:8]} (first key {first}, {keys} keys)"
        calls[name].append(micros)
    print(f"\n{r['label']} ({r['jobs']:,} jobs)\n")
    print("| call | count | p50 µs | p90 µs | mean µs |")
    print("|---|---:|---:|---:|---:|")
    for name, t in sorted(calls.items(), key=lambda kv: -sum(kv[1])):
        t.sort()
        print(f"| {name} | {len(t):,} | {t[len(t) // 2]} | {t[int(len(t) * 0.9)]} | {statistics.mean(t):.1f} |")
PY
echo
echo "(files in $dir)"
