#!/bin/busybox sh
# shellcheck shell=dash disable=SC2013
# /init of the test guest's initramfs (built by tools/guest/build_initramfs.sh).
#
# Loads the kernel modules in /lib/modules/load-order, mounts the virtio-fs
# tag named by `vhostmig.tag=` on the kernel command line at /mnt, runs
# /workload.sh with /mnt as its argument and prints exactly one line
#   VHOSTMIG-GUEST-RESULT: PASS|FAIL <reason>
# before powering off. With `vhostmig.probe=1` it only prints
# `VHOSTMIG-GUEST-RESULT: PASS probe` and powers off (used to check that an
# accelerator can boot this kernel at all).

/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /mnt
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The image has no /dev/console node, so the kernel started us without one.
exec 0</dev/console 1>/dev/console 2>&1
mount -t tmpfs tmpfs /tmp

result() {
  echo "VHOSTMIG-GUEST-RESULT: $* (uptime $(cut -d' ' -f1 /proc/uptime)s)"
  sync
  poweroff -f
  sleep 10
}

tag=""
probe=0
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vhostmig.tag=*) tag="${arg#vhostmig.tag=}" ;;
    vhostmig.probe=1) probe=1 ;;
  esac
done

echo "vhostmig-init: up after $(cut -d' ' -f1 /proc/uptime)s"
[ "$probe" = 1 ] && result PASS probe

for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m.ko" || result FAIL "insmod $m"
done

[ -n "$tag" ] || result FAIL "no vhostmig.tag= on the kernel command line"
mount -t virtiofs "$tag" /mnt || result FAIL "mount -t virtiofs $tag"
echo "vhostmig-init: mounted $tag at /mnt after $(cut -d' ' -f1 /proc/uptime)s"

if sh /workload.sh /mnt; then
  umount /mnt || result FAIL "umount /mnt"
  result PASS workload
else
  rc=$?
  umount /mnt
  result FAIL "workload exit $rc"
fi
