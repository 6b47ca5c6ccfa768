#!/usr/bin/env bash
# cvm-cli upload gs:// against the official google-cloud-storage Python client uploading the same
# object to the same local endpoint: gcp-storage-emulator (in memory) on 127.0.0.1. Both clients
# talk to the emulator directly; ours also fetches an OAuth token from a local token server
# (Tests/GCPTestSupport/Scripts/gcs_auth_proxy.py) and sends it, as it always does.
#
# Cases (same chunk size for both, BENCH_CHUNK_MIB, default 8 like `upload`):
#   as-is   a GCP tar.gz of BENCH_MIB (default 256) MiB of incompressible data, uploaded as is
#   convert the raw disk behind it: ours converts on the fly while uploading; the peer path is
#           `cvm-cli convert` to a tar.gz file, then the Python client uploads that file
# The emulator re-copies the whole object on every chunk, so it, not the clients, bounds the
# rate at large sizes: keep the object to a few hundred MiB and the chunks large.
#
# Usage: bench/upload-gcs.sh path/to/release/cvm-cli     (work files in bench/out/upload-gcs/)
# Prints time, peak RSS and the ratio ours/peer per case (< 1 means ours is faster).
# Exit status: 1 if an upload fails or an object differs from its source.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cli=$(realpath "${1:?usage: bench/upload-gcs.sh path/to/release/cvm-cli}")
scripts=$(realpath "$here/../Tests/GCPTestSupport/Scripts")
out=${BENCH_OUT:-$here/out/upload-gcs}
size_mib=${BENCH_MIB:-256}
chunk_mib=${BENCH_CHUNK_MIB:-8}
runs=${BENCH_RUNS:-2}
python3 -c 'import gcp_storage_emulator, jwt, google.cloud.storage, google_crc32c' \
  || { echo "bench: run scripts/install-deps.sh --with-test-tools first" >&2; exit 1; }
for tool in openssl /usr/bin/time; do command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }; done
mkdir -p "$out"
cd "$out"
failures=0

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0; sleep 0.05; done; return 1; }

emu_port=$(free_port); tok_port=$(free_port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
python3 -m gcp_storage_emulator start --host 127.0.0.1 --port "$emu_port" --default-bucket bench -q -M >emulator.log 2>&1 &
pids+=($!)
rm -f sa.pem sa.pub
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.pem 2>/dev/null
openssl pkey -in sa.pem -pubout -out sa.pub
PYTHONPATH="$(realpath "$here/../Tests/CVMTestData/Scripts")" python3 "$scripts/gcs_auth_proxy.py" --port "$tok_port" --upstream-port "$emu_port" --public-key sa.pub \
  --client-email bench@cvm-test.iam.gserviceaccount.com --token-uri "http://127.0.0.1:$tok_port/token" >proxy.log 2>&1 &
pids+=($!)
wait_port "$emu_port"; wait_port "$tok_port"
python3 - "$tok_port" <<'EOF'
import json, sys
json.dump({"type": "service_account", "project_id": "cvm-test", "private_key_id": "bench",
           "private_key": open("sa.pem").read(), "client_email": "bench@cvm-test.iam.gserviceaccount.com",
           "token_uri": "http://127.0.0.1:%s/token" % sys.argv[1]}, open("key.json", "w"))
EOF
export GOOGLE_APPLICATION_CREDENTIALS=$PWD/key.json STORAGE_EMULATOR_HOST=http://127.0.0.1:$emu_port XDG_CACHE_HOME=$PWD/cache

echo "== inputs: ${size_mib} MiB raw of incompressible data, its GCP tar.gz; chunks of ${chunk_mib} MiB"
if [ ! -s disk.raw ] || [ "$(stat -c %s disk.raw)" -ne $((size_mib << 20)) ]; then
  ( set +o pipefail; openssl enc -aes-128-ctr -nosalt -pass pass:gcs -pbkdf2 -in /dev/zero 2>/dev/null | head -c $((size_mib << 20)) ) > disk.raw
fi
rm -f disk.tar.gz; "$cli" convert disk.raw disk.tar.gz >/dev/null
object_bytes=$(stat -c %s disk.tar.gz)

check() {  # check <object> : the stored object equals disk.tar.gz
  python3 "$scripts/gcs_client.py" download "$STORAGE_EMULATOR_HOST" bench "$1" got.tar.gz >/dev/null \
    && cmp -s got.tar.gz disk.tar.gz || { echo "   $1: the stored object differs" >&2; failures=$((failures + 1)); }
  rm -f got.tar.gz
}

report() {  # report <case> <ours s> <ours MiB> <peer s> <peer MiB>
  awk -v c="$1" -v a="$2" -v ar="$3" -v b="$4" -v br="$5" -v n="$object_bytes" 'BEGIN {
    printf "%-8s ours %6.2f s (%6.1f MiB/s, RSS %5.1f MiB)   peer %6.2f s (%6.1f MiB/s, RSS %5.1f MiB)   ratio %.2f\n",
      c, a, n / 1048576 / a, ar, b, n / 1048576 / b, br, a / b }'
}

chunk_bytes=$((chunk_mib << 20))
echo "== as-is: the tar.gz ($((object_bytes >> 20)) MiB)"
measure "$runs" ours-asis "" "$cli" upload disk.tar.gz gs://bench/ours-asis.tar.gz --chunk-mib "$chunk_mib"
o_s=$secs o_r=$rss_mib; check ours-asis.tar.gz
measure "$runs" peer-asis "" python3 "$scripts/gcs_client.py" upload "$STORAGE_EMULATOR_HOST" bench peer-asis.tar.gz disk.tar.gz "$chunk_bytes"
p_s=$secs p_r=$rss_mib; check peer-asis.tar.gz
[ -n "$o_s" ] && [ -n "$p_s" ] && report as-is "$o_s" "$o_r" "$p_s" "$p_r"

echo "== convert: raw → GCP tar.gz → bucket"
measure "$runs" ours-convert "" "$cli" upload disk.raw gs://bench/ours-convert.tar.gz --chunk-mib "$chunk_mib"
o_s=$secs o_r=$rss_mib; check ours-convert.tar.gz
measure "$runs" peer-convert "rm -f peer.tar.gz" bash -c "'$cli' convert disk.raw peer.tar.gz >/dev/null && python3 '$scripts/gcs_client.py' upload '$STORAGE_EMULATOR_HOST' bench peer-convert.tar.gz peer.tar.gz $chunk_bytes"
p_s=$secs p_r=$rss_mib; check peer-convert.tar.gz
[ -n "$o_s" ] && [ -n "$p_s" ] && report convert "$o_s" "$o_r" "$p_s" "$p_r"

[ "$failures" -eq 0 ] || { echo "bench: $failures failure(s)" >&2; exit 1; }
