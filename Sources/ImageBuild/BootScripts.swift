/// The shell scripts of the image (busybox sh): the initramfs's /init, which verifies and
/// mounts the root, and the root's /sbin/init, which brings up the network and the agent.
enum BootScripts {
    /// GPT partition names the initramfs looks for (the kernel exposes them as PARTNAME).
    static let rootName = "root"
    static let verityName = "root-verity"
    static let dataName = "data"

    /// /init of the initramfs. Reads every block of the root through dm-verity before mounting
    /// it, so one flipped byte anywhere stops the boot (not just a later read), then powers off.
    static let initramfsInit = #"""
    #!/bin/sh
    # cvm initramfs: load modules, verify the root with dm-verity, mount root and data, switch.
    export PATH=/bin:/sbin
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    say() { echo "cvm-initramfs: $*" > /dev/console; }
    refuse() {
        say "FATAL: $*"
        say "refusing to boot"
        sleep 1
        poweroff -f
    }
    for m in $(cat /lib/modules/load-order); do
        insmod "/lib/modules/$m" || refuse "cannot load kernel module $m"
    done
    roothash=""; salt=""; blocks=""
    for arg in $(cat /proc/cmdline); do
        case "$arg" in
            roothash=*) roothash="${arg#roothash=}" ;;
            cvm.verity_salt=*) salt="${arg#cvm.verity_salt=}" ;;
            cvm.verity_blocks=*) blocks="${arg#cvm.verity_blocks=}" ;;
        esac
    done
    [ -n "$roothash" ] && [ -n "$salt" ] && [ -n "$blocks" ] || refuse "the kernel command line lacks roothash=, cvm.verity_salt= or cvm.verity_blocks="
    # Partitions by GPT name, as the kernel reports them in uevent.
    find_part() {
        for u in /sys/class/block/*/uevent; do
            if grep -qx "PARTNAME=$1" "$u"; then d="${u%/uevent}"; echo "${d##*/}"; return 0; fi
        done
        return 1
    }
    i=0
    while ! root=$(find_part root) || ! hash=$(find_part root-verity) || ! data=$(find_part data); do
        i=$((i + 1)); [ $i -gt 100 ] && refuse "no GPT partitions named root, root-verity and data"
        sleep 0.1
    done
    say "root /dev/$root, verity /dev/$hash, data /dev/$data, roothash $roothash"
    # Version 1 table; hash start block 1 skips the veritysetup superblock kept in the partition.
    dmsetup create --noudevsync --readonly cvm-root \
        --table "0 $((blocks * 8)) verity 1 /dev/$root /dev/$hash 4096 4096 $blocks 1 sha256 $roothash $salt" \
        || refuse "dm-verity setup failed"
    dev=/dev/mapper/cvm-root
    [ -b "$dev" ] || dev=/dev/dm-0
    if ! cat "$dev" > /dev/null; then
        refuse "root partition /dev/$root does not match roothash $roothash (dm-verity found a modified block)"
    fi
    say "root verified"
    mkdir -p /sysroot
    mount -t squashfs -o ro "$dev" /sysroot || refuse "cannot mount the verified root"
    mount -t ext4 -o nodev,nosuid "/dev/$data" /sysroot/data || refuse "cannot mount the data partition /dev/$data"
    mount --move /dev /sysroot/dev
    mount --move /proc /sysroot/proc
    mount --move /sys /sysroot/sys
    exec switch_root /sysroot /sbin/init
    """#

    /// /sbin/init of the root: network for QEMU user networking (static 10.0.2.15), then the
    /// agent. If the agent stops, the VM powers off (the console says why).
    static let rootInit = #"""
    #!/bin/sh
    export PATH=/bin:/usr/bin
    say() { echo "cvm: $*" > /dev/console; }
    mount -t tmpfs -o mode=0755 tmpfs /run
    mount -t tmpfs -o mode=1777 tmpfs /tmp
    mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
    ip link set lo up
    ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
    say "starting cvm-agent"
    /usr/bin/cvm-agent --workload /data/workload > /dev/console 2>&1
    say "cvm-agent exited with status $?; powering off"
    sleep 1
    poweroff -f
    """#
}
