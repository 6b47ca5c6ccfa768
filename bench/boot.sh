#!/usr/bin/env bash
# Boot time of the base image: deploy-local start to the agent answering (target ≤ 25 s under
# TCG, issue 9). Usage: bench/boot.sh [cvm-cli] [disk]   (builds the image first if missing)
set -euo pipefail
cli=$(realpath "${1:-.build/release/cvm-cli}")
disk=${2:-images/base.raw}
port=${BENCH_PORT:-18400}
[ -f "$disk" ] || "$cli" image build --output "$disk"
for run in 1 2; do
  "$cli" deploy-local --disk "$disk" --vm_name bench-boot --port "$port" --detach --json > /tmp/cvm-bench-boot.json
  accel=$(sed -n 's/.*"accelerator":"\([a-z]*\)".*/\1/p' /tmp/cvm-bench-boot.json)
  secs=$(sed -n 's/.*"boot_seconds":\([0-9.]*\).*/\1/p' /tmp/cvm-bench-boot.json)
  echo "boot $run: ${secs} s to the agent answering ($accel)"
  "$cli" cleanup local --vm_name bench-boot > /dev/null
done
