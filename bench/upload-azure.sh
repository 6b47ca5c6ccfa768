#!/usr/bin/env bash
# cvm-cli upload az:// against Microsoft's azure-storage-blob SDK (BlobClient.upload_blob as a
# page blob, then Content-MD5 — bench/azure_peer_upload.py), both into the same local page-blob
# endpoint (Tests/AzureTestSupport/Scripts/page_blob_server.py: every request's SharedKey is
# checked with the SDK's own policy, pages land in a sparse file). The disk is the 4 GiB bench
# disk of bench/formats.sh (~730 MiB of data). The peer uploads the fixed VHD; cvm-cli uploads the
# same fixed VHD (sent as is) and the raw disk (converted to that VHD on the fly). Reported: wall
# time, peak RSS, bytes received by the server and the ratio to the allocated data; each blob is
# read back with the SDK and compared with the VHD.
#
# Usage: bench/upload-azure.sh path/to/release/cvm-cli     (work files in bench/out/azure/)
#        BENCH_RUNS=N runs per case (default 2), BENCH_CONCURRENCY (default 8, both tools)
# Targets: time ≤ the peer's, bytes sent ≤ 1.05× allocated data, peak RSS ≤ 64 MiB.
# Exit status: 1 if a blob is wrong or a run fails; a missed target is only reported.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cli=$(realpath "${1:?usage: bench/upload-azure.sh path/to/release/cvm-cli}")
out=${BENCH_OUT:-$here/out/azure}
runs=${BENCH_RUNS:-2}
concurrency=${BENCH_CONCURRENCY:-8}
scripts=$here/../Tests/AzureTestSupport/Scripts
rss_limit_mib=64
for tool in sgdisk qemu-img python3 cmp /usr/bin/time "${SWIFTC:-swiftc}"; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done
python3 -c 'import azure.storage.blob' 2>/dev/null || { echo "bench: azure-storage-blob is missing (scripts/install-deps.sh --with-test-tools)" >&2; exit 1; }
mkdir -p "$out"
cd "$out"
export SOURCE_DATE_EPOCH=1700000000

# ---- inputs --------------------------------------------------------------------------------
if [ ! -x gendisk ] || [ "$here/gendisk.swift" -nt gendisk ]; then
  "${SWIFTC:-swiftc}" -O "$here/gendisk.swift" -o gendisk
fi
if [ -z "${BENCH_REUSE:-}" ] || [ ! -s disk.raw ]; then
  rm -f disk.raw disk.vhd; truncate -s 4G disk.raw
  sgdisk --clear --disk-guid=11111111-2222-3333-4444-555555555555 \
    -n1:1M:+256M -t1:ef00 -c1:esp -n2:257M:+2048M -t2:8304 -c2:root -n3:2305M:0 -t3:8300 -c3:data disk.raw >/dev/null
  ./gendisk disk.raw 42 >/dev/null
  "$cli" convert disk.raw disk.vhd --format vhd --force >/dev/null 2>&1
fi
allocated=$(du -B1 disk.raw | cut -f1)
echo "== inputs in $out: disk.raw 4 GiB, $((allocated >> 20)) MiB allocated; disk.vhd (fixed)"
cat disk.raw disk.vhd >/dev/null   # same page-cache state for everyone

# ---- the endpoint --------------------------------------------------------------------------
key=$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(64)).decode())')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rm -rf blobs && mkdir -p blobs
python3 "$scripts/page_blob_server.py" "$port" benchacct "$key" "$out/blobs" >server.log 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null && break; sleep 0.1; done
endpoint=http://127.0.0.1:$port
export AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=benchacct;AccountKey=$key;BlobEndpoint=$endpoint/benchacct"
export XDG_CACHE_HOME=$out/cache
admin() { python3 -c "import urllib.request, sys; r = urllib.request.Request(sys.argv[1], data=b'{}' if sys.argv[2] == 'POST' else None, method=sys.argv[2]); print(urllib.request.urlopen(r).read().decode())" "$endpoint/_admin/$1" "$2"; }
page_bytes() { admin stats GET | python3 -c 'import json, sys; print(json.load(sys.stdin)["page_bytes"])'; }
python3 -c "
from azure.storage.blob import ContainerClient
import os
try: ContainerClient.from_connection_string(os.environ['AZURE_STORAGE_CONNECTION_STRING'], 'bench').create_container()
except Exception as e: print('container:', type(e).__name__)"

# ---- measuring -----------------------------------------------------------------------------
failures=0
declare -A time_of rss_of bytes_of
# run_case <name> <blob> <command…>: best of $runs, bytes received in the last run, blob checked.
run_case() {
  local name=$1 blob=$2
  shift 2
  measure "$runs" "$name" "python3 -c \"import urllib.request; urllib.request.urlopen(urllib.request.Request('$endpoint/_admin/reset', data=b'{}', method='POST'))\"" "$@"
  time_of[$name]=$secs; rss_of[$name]=$rss_mib; bytes_of[$name]=$(page_bytes)
  python3 "$scripts/blob_client.py" download "$AZURE_STORAGE_CONNECTION_STRING" bench "$blob" "$name.copy.vhd" >"$name.check.json"
  if cmp -s "$name.copy.vhd" disk.vhd; then echo "   $name: blob == disk.vhd"; else echo "   $name: BLOB DIFFERS from disk.vhd" >&2; failures=$((failures + 1)); fi
  rm -f "$name.copy.vhd"
}
echo "== uploading (best of $runs, $concurrency transfers in flight)"
run_case peer-sdk peer.vhd python3 "$here/azure_peer_upload.py" "$AZURE_STORAGE_CONNECTION_STRING" bench peer.vhd disk.vhd "$concurrency"
run_case ours-vhd ours-vhd.vhd "$cli" upload disk.vhd az://bench/ours-vhd.vhd
run_case ours-raw ours-raw.vhd "$cli" upload disk.raw az://bench/ours-raw.vhd

# ---- report --------------------------------------------------------------------------------
echo "== results (server: $endpoint, allocated data $allocated bytes)"
printf '   %-9s %8s %9s %14s %10s %s\n' case "time s" "RSS MiB" "bytes sent" "/alloc" "time vs peer"
for name in peer-sdk ours-vhd ours-raw; do
  [ -n "${time_of[$name]}" ] || { echo "   $name: no result"; continue; }
  ratio_alloc=$(awk -v b="${bytes_of[$name]}" -v a="$allocated" 'BEGIN { printf "%.3f", b / a }')
  ratio_time=$(awk -v o="${time_of[$name]}" -v p="${time_of[peer-sdk]}" 'BEGIN { printf "%.2f×", (p > 0 ? o / p : 0) }')
  printf '   %-9s %8s %9s %14s %10s %s\n' "$name" "${time_of[$name]}" "${rss_of[$name]}" "${bytes_of[$name]}" "$ratio_alloc" "$ratio_time"
done
for name in ours-vhd ours-raw; do
  [ -n "${time_of[$name]}" ] || continue
  awk -v o="${time_of[$name]}" -v p="${time_of[peer-sdk]}" 'BEGIN { exit !(o <= p) }' || echo "   target missed: $name slower than the peer"
  awk -v b="${bytes_of[$name]}" -v a="$allocated" 'BEGIN { exit !(b <= 1.05 * a) }' || echo "   target missed: $name sent more than 1.05× the allocated data"
  awk -v r="${rss_of[$name]}" -v l="$rss_limit_mib" 'BEGIN { exit !(r <= l) }' || echo "   target missed: $name peak RSS above $rss_limit_mib MiB"
done
[ "$failures" -eq 0 ] || { echo "bench: $failures failure(s)" >&2; exit 1; }
