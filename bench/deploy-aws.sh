#!/usr/bin/env bash
# deploy-aws's disk digest (disk_sha256, computed while the EBS blocks stream) against the peer
# way of getting it: the same EBS upload (`cvm-cli upload … ebs://`) followed by a second pass
# over the raw disk with `openssl dgst -sha256` (SHA-NI; faster than coreutils sha256sum here). The disk is sparse: BENCH_GIB GiB virtual (default 8) with
# 64 MiB of data in 16 runs, so the digest is mostly zeros — the case where hashing could
# dominate. Runs against a local moto_server (127.0.0.1, auth off: this measures our side).
#
# Usage: bench/deploy-aws.sh path/to/cvm-cli        (work files in bench/out/deploy-aws/)
# Target: deploy-aws (upload + digest + EC2 steps) ≤ 1.0× upload + openssl dgst.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cli=$(realpath "${1:?usage: bench/deploy-aws.sh path/to/cvm-cli}")
out=${BENCH_OUT:-$here/out/deploy-aws}
gib=${BENCH_GIB:-8}
runs=${BENCH_RUNS:-2}
for tool in python3 openssl sha256sum /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done
python3 -c 'import moto.server' || { echo "bench: moto[server] is missing (scripts/install-deps.sh --with-test-tools)" >&2; exit 1; }
mkdir -p "$out"
cd "$out"
failures=0

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m moto.server -H 127.0.0.1 -p "$port" >moto.log 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null; wait $moto_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-2
export AWS_ENDPOINT_URL=http://127.0.0.1:$port

rm -f disk.raw && truncate -s "${gib}G" disk.raw
for i in $(seq 0 15); do
  head -c $((4 << 20)) /dev/urandom | dd of=disk.raw bs=1M seek=$((i * gib * 1024 / 16)) conv=notrunc,sparse status=none
done

measure "$runs" upload "true" "$cli" upload disk.raw ebs://us-east-2
upload_s=$secs
measure "$runs" sha256 "true" openssl dgst -sha256 disk.raw
sum_s=$secs
measure "$runs" deploy "rm -rf _artifacts" "$cli" deploy-aws --disk disk.raw --vm_name bench --region us-east-2 --vm_type m6a.large
deploy_s=$secs
deploy_rss=$rss_mib
want=$(sha256sum disk.raw | cut -d' ' -f1)
got=$(python3 -c 'import json; print(json.load(open("_artifacts/aws_bench.json"))["disk_sha256"])')
[ "$want" = "$got" ] || { echo "bench: disk_sha256 $got != sha256sum $want" >&2; failures=$((failures + 1)); }

peer=$(awk -v a="$upload_s" -v b="$sum_s" 'BEGIN { printf "%.2f", a + b }')
ratio=$(awk -v d="$deploy_s" -v p="$peer" 'BEGIN { printf "%.2f", d / p }')
echo "disk: ${gib} GiB virtual, 64 MiB data (raw, sparse)"
echo "upload ebs://        ${upload_s} s"
echo "openssl dgst -sha256 ${sum_s} s"
echo "peer (upload + dgst) ${peer} s"
echo "deploy-aws           ${deploy_s} s (upload + inline digest + EC2 steps), peak RSS ${deploy_rss} MiB"
echo "ratio deploy / peer  ${ratio}  (target ≤ 1.0)"
exit $((failures > 0))
