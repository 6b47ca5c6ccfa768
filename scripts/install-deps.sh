#!/usr/bin/env bash
# Installs what building and testing cvm-cli needs on a fresh Debian 12 machine (as root).
# Build: the -dev packages of the system libraries. Tests/benchmarks: the peer tools used as
# oracles (qemu-img, sgdisk, e2fsprogs, tar, gzip, pigz). None of the oracles is needed at runtime.
set -euo pipefail
build_pkgs=(pkg-config zlib1g-dev libdeflate-dev libqcow-dev libcurl4-openssl-dev libssl-dev libxml2-dev liblzma-dev)
test_pkgs=(qemu-utils gdisk e2fsprogs tar gzip pigz coreutils time)
# NetfilterTests: nft lists what cvm-agent programmed in an `unshare -rn` namespace.
test_pkgs+=(nftables util-linux)
# Image build (`cvm-cli image build`) and local boot (`deploy-local`) tools; the tests use them too.
image_pkgs=(qemu-system-x86 ovmf swtpm swtpm-tools mtools dosfstools squashfs-tools cryptsetup-bin gdisk binutils
            systemd-boot-efi busybox-static e2fsprogs diffutils curl openssl python3)
# golden predict's referees: two independent Authenticode implementations and systemd-measure.
test_pkgs+=(pesign osslsigncode systemd)
# cvm-agent runs a compose workload with a real podman + podman-compose (runc, netavark) in a
# network namespace of its own (iproute2, iptables for netavark's port forwarding).
test_pkgs+=(podman podman-compose runc netavark aardvark-dns iptables iproute2)
want=("${build_pkgs[@]}")
[ "${1:-}" = "--with-test-tools" ] && want+=("${test_pkgs[@]}" "${image_pkgs[@]}")
[ "${1:-}" = "--with-image-tools" ] && want+=("${image_pkgs[@]}")
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Test referees from PyPI (pinned): botocore re-signs SigV4, Microsoft's SDK recomputes SharedKey,
# cryptography verifies our JWTs and signatures, rfc8785 referees canonical JSON.
if [ "${1:-}" = "--with-test-tools" ]; then
  command -v python3 >/dev/null || { echo "python3 is required for the test referees" >&2; exit 1; }
  # One pinned package a line (merges stay additive); pip skips what is already installed.
  pip_pkgs=(
    "botocore==1.43.11"
    "boto3==1.43.11"
    "moto[server]==5.2.1"
    "cryptography==48.0.0"
    "azure-storage-blob==12.31.1"
    "rfc8785==0.1.4"
    "uefivars==1.2"
    "google-crc32c==1.9.0"
    "gcp-storage-emulator==2026.7.19"
    "pyjwt==2.15.1"
    "google-cloud-storage==3.17.1"
    "azure-core==1.41.0"
    "google-api-python-client==2.202.0"
    # deploy-azure's fake ARM validates request bodies with these models (older model style,
    # which reveals unknown properties on a round trip).
    "azure-mgmt-core==1.6.0"
    "azure-mgmt-compute==37.2.0"
    "azure-mgmt-network==30.2.0"
    "azure-mgmt-storage==24.0.1"
  )
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "${pip_pkgs[@]}"
fi
