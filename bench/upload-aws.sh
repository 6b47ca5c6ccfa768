#!/usr/bin/env bash
# cvm-cli upload to S3 and EBS against the peers doing the same upload to the same local
# endpoint: `aws s3 cp` (the AWS CLI) for s3://, a boto3 EBS-direct script
# (bench/ebs_peer_upload.py) for ebs://. The endpoint is a discard server (bench/aws_sink.py)
# that speaks just enough of both APIs: moto checks correctness in the tests but is too slow
# to measure clients with. Input: the 4 GiB bench disk of bench/formats.sh (~730 MiB of data),
# and for s3:// also a dense file of BENCH_DENSE_MIB (default 1024) MiB of incompressible data,
# where no part is a hole (every byte is read, hashed and sent by both).
#
# Usage: bench/upload-aws.sh path/to/release/cvm-cli     (work files in bench/out/)
# Prints time, throughput, peak RSS, bytes the server received, and ratios ours/peer.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cli=$(realpath "${1:?usage: bench/upload-aws.sh path/to/release/cvm-cli}")
out=${BENCH_OUT:-$here/out}
runs=${BENCH_RUNS:-2}
for tool in aws python3 sgdisk openssl /usr/bin/time "${SWIFTC:-swiftc}"; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (scripts/install-deps.sh --with-test-tools)" >&2; exit 1; }
done
mkdir -p "$out"
cd "$out"
failures=0

if [ ! -x gendisk ] || [ "$here/gendisk.swift" -nt gendisk ]; then "${SWIFTC:-swiftc}" -O "$here/gendisk.swift" -o gendisk; fi
if [ ! -s disk.raw ] || [ "${BENCH_REUSE:-0}" != 1 ]; then
  rm -f disk.raw; truncate -s 4G disk.raw
  sgdisk --clear --disk-guid=11111111-2222-3333-4444-555555555555 \
    -n1:1M:+256M -t1:ef00 -c1:esp -n2:257M:+2048M -t2:8304 -c2:root -n3:2305M:0 -t3:8300 -c3:data disk.raw >/dev/null
  ./gendisk disk.raw 42 >/dev/null
fi
allocated=$(( $(du -B1 disk.raw | cut -f1) ))
nonzero=$(python3 - <<'PY'
import os
fd, z, n = os.open("disk.raw", os.O_RDONLY), bytes(524288), 0
size = os.fstat(fd).st_size
for i in range(0, size, 524288):
    if os.pread(fd, 524288, i) != z: n += 1
print(n * 524288)
PY
)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 "$here/aws_sink.py" "$port" >sink.log 2>&1 &
sink=$!
trap 'kill $sink 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && break; sleep 0.05; done
export AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-2 AWS_DEFAULT_REGION=us-east-2
export AWS_ENDPOINT_URL=http://127.0.0.1:$port XDG_CACHE_HOME=$PWD/cache
received() { python3 -c "import json,urllib.request; print(json.load(urllib.request.urlopen('http://127.0.0.1:$port/sink-stats'))['body_bytes'])"; }

echo "== disk.raw: 4 GiB virtual, $((allocated >> 20)) MiB allocated, $((nonzero >> 20)) MiB in non-zero 512 KiB blocks"
rows=()
row() {  # row <case> <ours s> <ours rss> <ours bytes> <peer s> <peer rss> <peer bytes> <payload bytes>
  rows+=("$(awk -v c="$1" -v a="$2" -v ar="$3" -v ab="$4" -v b="$5" -v br="$6" -v bb="$7" -v n="$8" 'BEGIN {
    printf "%-4s ours %6.2f s %6.1f MiB/s RSS %5.1f MiB sent %6.1f MiB | peer %6.2f s %6.1f MiB/s RSS %5.1f MiB sent %6.1f MiB | time ratio %.2f",
      c, a, n / 1048576 / a, ar, ab / 1048576, b, n / 1048576 / b, br, bb / 1048576, a / b }')")
}

received >/dev/null
measure "$runs" ours-s3 "" "$cli" upload disk.raw s3://bench/ours.raw
o_s=$secs o_r=$rss_mib o_b=$(( $(received) / runs ))
measure "$runs" peer-s3 "" aws s3 cp --only-show-errors disk.raw s3://bench/peer.raw
p_s=$secs p_r=$rss_mib p_b=$(( $(received) / runs ))
row s3 "$o_s" "$o_r" "$o_b" "$p_s" "$p_r" "$p_b" "$((4 << 30))"

dense_mib=${BENCH_DENSE_MIB:-1024}
if [ ! -s dense.raw ] || [ "$(stat -c %s dense.raw)" -ne $((dense_mib << 20)) ]; then
  ( set +o pipefail; openssl enc -aes-128-ctr -nosalt -pass pass:s3 -pbkdf2 -in /dev/zero 2>/dev/null | head -c $((dense_mib << 20)) ) > dense.raw
fi
cat dense.raw >/dev/null   # both read it from the page cache
measure "$runs" ours-s3-dense "" "$cli" upload dense.raw s3://bench/ours-dense.raw
o_s=$secs o_r=$rss_mib o_b=$(( $(received) / runs ))
measure "$runs" peer-s3-dense "" aws s3 cp --only-show-errors dense.raw s3://bench/peer-dense.raw
p_s=$secs p_r=$rss_mib p_b=$(( $(received) / runs ))
row s3d "$o_s" "$o_r" "$o_b" "$p_s" "$p_r" "$p_b" "$((dense_mib << 20))"

measure "$runs" ours-ebs "" "$cli" upload disk.raw "ebs://us-east-2"
o_s=$secs o_r=$rss_mib o_b=$(( $(received) / runs ))
measure "$runs" peer-ebs "" python3 "$here/ebs_peer_upload.py" disk.raw
p_s=$secs p_r=$rss_mib p_b=$(( $(received) / runs ))
row ebs "$o_s" "$o_r" "$o_b" "$p_s" "$p_r" "$p_b" "$nonzero"

echo "== results (best of $runs; sent = body bytes the server received per run)"
printf '%s\n' "${rows[@]}"
awk -v b="$o_b" -v a="$allocated" 'BEGIN { printf "ebs bytes sent / allocated data: %.3f (target <= 1.05)\n", b / a }'
[ "$failures" -eq 0 ] || { echo "bench: $failures run(s) failed" >&2; exit 1; }
