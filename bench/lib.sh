# Shared by the benchmarks: best-of-N wall time and peak RSS of a command.
# Callers set `failures=0` first; failed runs are counted there.

# measure <runs> <name> <setup> <command…>: sets secs (best) and rss_mib (largest peak RSS);
# <setup> (a shell snippet) runs untimed before each run.
measure() {
  local runs=$1 name=$2 setup=$3 i s kib best="" peak=0
  shift 3
  secs=""; rss_mib=""
  for ((i = 0; i < runs; i++)); do
    bash -c "$setup" || { echo "   $name: setup failed" >&2; failures=$((failures + 1)); return 0; }
    sync
    if ! /usr/bin/time -f '%e %M' -o "$name.time" "$@" >"$name.log" 2>&1; then
      echo "   $name FAILED: $(tail -n 3 "$name.log")" >&2
      failures=$((failures + 1))
      return 0
    fi
    read -r s kib < <(tail -n 1 "$name.time")
    best=$(awk -v a="$s" -v b="$best" 'BEGIN { print (b == "" || a < b) ? a : b }')
    peak=$((kib > peak ? kib : peak))
  done
  secs=$best
  rss_mib=$(awk -v k="$peak" 'BEGIN { printf "%.1f", k / 1024 }')
}
