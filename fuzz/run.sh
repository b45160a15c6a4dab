#!/usr/bin/env bash
# Runs afl-fuzz on each target for FUZZ_SECONDS (default 3600), FUZZ_JOBS targets at a time
# (default: one per core), each seeded from and merged back into fuzz/corpus/TARGET
# (afl-cmin keeps the inputs that reach distinct code). A crash is copied to
# fuzz/crashes/TARGET/ and fails the run. Appends one row per target to fuzz/results.md.
#   fuzz/run.sh [TARGET...]        (make fuzz; make fuzz FUZZ_TARGETS="rtmp flv")
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-3600}
jobs=${FUZZ_JOBS:-$(nproc)}
bin=$CARGO_TARGET_DIR/release/ferrocast-fuzz
out=${FUZZ_OUT:-$HOME/.cache/ferrocast/fuzz-out}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(ls corpus)
fi
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
  AFL_SKIP_CRASHES=1 AFL_NO_AFFINITY=1

one() {
  local t=$1 dir=$out/$1
  rm -rf "$dir" && mkdir -p "$dir"
  # 1 GB of memory and 2 s per input at most: beyond either is a finding.
  cargo afl fuzz -V "$seconds" -m 1024 -t 2000 -i "corpus/$t" -o "$dir" -- "$bin" "$t" \
    >"$dir/log" 2>&1 || { echo "afl-fuzz $t failed; see $dir/log" >&2; tail -20 "$dir/log" >&2; return 1; }
  local stats=$dir/default/fuzzer_stats
  local execs crashes hangs run_s
  execs=$(awk -F' *: *' '$1=="execs_done"{print $2}' "$stats")
  crashes=$(awk -F' *: *' '$1=="saved_crashes"{print $2}' "$stats")
  hangs=$(awk -F' *: *' '$1=="saved_hangs"{print $2}' "$stats")
  run_s=$(awk -F' *: *' '$1=="run_time"{print $2}' "$stats")
  # The corpus grows by what the queue found, minimised.
  # The seeds (real captures) and earlier findings stay under their names; afl's copies of
  # them in its queue (orig:NAME) are left out.
  mkdir -p "$dir/all" && cp "corpus/$t"/* "$dir/all"/
  for f in "$dir/default/queue"/id:*; do
    case $f in *orig:*) ;; *) cp "$f" "$dir/all/$(sha1sum "$f" | cut -c1-16)";; esac
  done
  if cargo afl cmin -i "$dir/all" -o "$dir/min" -- "$bin" "$t" >"$dir/cmin.log" 2>&1; then
    rm -rf "corpus/$t" && mkdir -p "corpus/$t"
    cp "$dir/min"/* "corpus/$t"/
    for f in "$dir/all"/seed-* "$dir/all"/crash-*; do
      [ -e "$f" ] && cp "$f" "corpus/$t"/
    done
  fi
  # A finding goes to crashes/TARGET; once fixed, it belongs in the corpus as crash-HASH.
  if [ "${crashes:-0}" != 0 ] || [ "${hangs:-0}" != 0 ]; then
    mkdir -p "crashes/$t" && cp "$dir/default/crashes"/id:* "$dir/default/hangs"/id:* "crashes/$t"/ 2>/dev/null || true
  fi
  printf '| %s | %s | %s s | %s | %s | %s | %s |\n' "$(date -u +%F)" "$t" "$run_s" "$execs" \
    "$(ls "corpus/$t" | wc -l)" "$crashes" "$hangs" >>results.md
  [ "${crashes:-0}" = 0 ] && [ "${hangs:-0}" = 0 ]
}

[ -f results.md ] || printf '| Date | Target | Ran | Executions | Corpus after | Crashes | Hangs |\n|---|---|---|---|---|---|---|\n' >results.md
status=0
running=0
for t in "${targets[@]}"; do
  one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n || status=1; running=$((running - 1)); fi
done
while [ "$running" -gt 0 ]; do wait -n || status=1; running=$((running - 1)); done
exit $status
