#!/usr/bin/env bash
# Counts the instructions redis-server runs per job in each phase of the bench's Redis table,
# with callgrind: exact and repeatable, where CPU time on a shared 2-core VM moves by ±30 %
# from one run to the next. Use it to compare two builds' Lua (scripts, commands, formatting).
#
#   crates/bench/scripts/redis-instructions.sh [BENCH_BINARY] [WORKLOADS]
#
# BENCH_BINARY defaults to target/release/laneway-bench (build it first:
# `cargo build --release -p laneway-bench`); WORKLOADS to `w1,w2,w4` (`--only` of
# `laneway-bench run`; always a --quick run, and BENCHMARKS.md is left alone). Needs valgrind
# (apt-get install -y valgrind). Under valgrind Redis runs ~50× slower: a run of w1,w2,w4 takes
# about 10 minutes, and the jobs/s it prints mean nothing.
set -euo pipefail

bench=${1:-target/release/laneway-bench}
only=${2:-w1,w2,w4}
command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install -y valgrind" >&2; exit 2; }
[ -x "$bench" ] || { echo "$bench not found: cargo build --release -p laneway-bench" >&2; exit 2; }
real=$(command -v redis-server) || { echo "redis-server not found" >&2; exit 2; }

dir=$(mktemp -d /tmp/redis-instructions.XXXXXX)
mkdir "$dir/bin" "$dir/phases"
# The runner starts `redis-server` from PATH: this one runs the real one under callgrind, with
# collection on from the start (the hook zeroes the counters when a phase begins).
cat > "$dir/bin/redis-server" <<WRAP
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$dir/cg.%p "$real" "\$@"
WRAP
# The phase hook: zero at a phase's start, dump at its end, and name the dump after the phase
# when the runner records it (runs it does not record leave unnamed dumps, ignored).
cat > "$dir/hook" <<HOOK
#!/bin/sh
case "\$1" in
  begin) callgrind_control -z "\$2" >/dev/null ;;
  end) callgrind_control -d "\$2" >/dev/null && ls -t $dir/cg.\$2.* | head -1 > $dir/last ;;
  phase) mv "\$(cat $dir/last)" "$dir/phases/\$3" ;;
esac
HOOK
chmod +x "$dir/bin/redis-server" "$dir/hook"

PATH="$dir/bin:$PATH" LANEWAY_BENCH_PHASE_HOOK="$dir/hook" \
  "$bench" run --quick --only "$only" --results "$dir/results.json" > "$dir/run.log" 2>&1 || {
  echo "the bench run failed; its log: $dir/run.log" >&2
  exit 1
}

echo "redis-server instructions per job, counted by callgrind ($bench, --only $only, quick sizes)"
echo
echo "| phase | jobs | instructions per job |"
echo "|---|---:|---:|"
python3 - "$dir" <<'PY'
import json, os, sys
d = sys.argv[1]
rows = json.load(open(os.path.join(d, "results.json")))["round_trips"]
for r in rows:
    path = os.path.join(d, "phases", r["phase"])
    if not os.path.exists(path):
        continue
    total = next(int(l.split()[1]) for l in open(path) if l.startswith("summary:"))
    print(f"| {r['label']} | {r['jobs']:,} | {total / r['jobs']:,.0f} |")
PY
echo
echo "(files in $dir)"
