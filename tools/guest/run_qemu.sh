#!/usr/bin/env bash
# Boots the test guest in QEMU with an optional vhost-user-fs device and
# reports the guest's result line.
#
# Usage: run_qemu.sh --kernel FILE --initrd FILE --log FILE
#                    [--socket PATH --tag TAG] [--accel auto|kvm|tcg]
#                    [--timeout SECONDS] [--mem MiB] [--smp N] [--append ARGS]
#
# Guest RAM is a shared memfd (vhost-user back-ends map it). The serial console
# goes to --log. With --accel auto (the default) KVM is used only when
# /dev/kvm is usable *and* a short probe boot under KVM finishes: some hosts'
# /dev/kvm hangs a stock kernel. Otherwise TCG, with the host's TSC rate on the
# kernel command line so early clock calibration cannot stall.
#
# Prints `accel=... seconds=... result=...`. Exit status: 0 when the guest
# printed `VHOSTMIG-GUEST-RESULT: PASS`, 1 on FAIL, 3 when the guest ended
# without a result line, 124 on timeout, 2 on usage errors.
set -euo pipefail

readonly QEMU="${QEMU:-qemu-system-x86_64}"
readonly RESULT_TAG="VHOSTMIG-GUEST-RESULT:"

log() { printf 'run_qemu: %s\n' "$*" >&2; }

usage() {
  sed -n '/^# Usage/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

# The host's TSC frequency in kHz: the kernel's refined calibration when the
# log still has it, else the nominal CPU clock.
host_tsc_khz() {
  local mhz
  mhz="$(dmesg 2>/dev/null | sed -nE 's/.*(Refined TSC clocksource calibration|tsc: Detected): ([0-9.]+) MHz.*/\2/p' | tail -n1)"
  [[ -n "${mhz}" ]] || mhz="$(awk -F': ' '/^cpu MHz/ { print $2; exit }' /proc/cpuinfo)"
  [[ -n "${mhz}" ]] || return 1
  awk -v m="${mhz}" 'BEGIN { printf "%d\n", m * 1000 }'
}

# Runs QEMU once. Arguments: accel, timeout, log, then extra QEMU arguments.
# Uses globals kernel, initrd, mem, smp, append.
boot() {
  local accel="$1" timeout_s="$2" log_file="$3"
  shift 3
  local cmdline="console=ttyS0 panic=-1 loglevel=4 ${append}"
  local accel_args=(-accel kvm -cpu host)
  if [[ "${accel}" == tcg ]]; then
    accel_args=(-accel tcg -cpu max)
    local khz
    if khz="$(host_tsc_khz)"; then
      cmdline+=" tsc_early_khz=${khz}"
    fi
  fi
  : >"${log_file}"
  timeout --kill-after=5 "${timeout_s}" "${QEMU}" \
    -machine q35 "${accel_args[@]}" -smp "${smp}" -m "${mem}M" \
    -object "memory-backend-memfd,id=mem,size=${mem}M,share=on" \
    -numa node,memdev=mem \
    -kernel "${kernel}" -initrd "${initrd}" -append "${cmdline}" \
    -nodefaults -no-user-config -display none -monitor none \
    -serial "file:${log_file}" -no-reboot \
    "$@" </dev/null
}

# True when KVM can boot this kernel; the answer is remembered for this host
# boot and kernel in /tmp, since a bad /dev/kvm costs a probe timeout.
kvm_usable() {
  [[ -r /dev/kvm && -w /dev/kvm ]] || return 1
  local key memo
  key="$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)-$(stat -c %s-%Y "${kernel}")"
  memo="/tmp/vhostmig-kvm-probe-${key}"
  if [[ -f "${memo}" ]]; then
    [[ "$(cat "${memo}")" == yes ]]
    return
  fi
  local probe_log
  probe_log="$(mktemp)"
  local saved_append="${append}"
  append="${append} vhostmig.probe=1"
  if boot kvm 10 "${probe_log}" >/dev/null 2>"${probe_log}.err" &&
    grep -q "${RESULT_TAG} PASS probe" "${probe_log}"; then
    echo yes >"${memo}"
  else
    log "KVM probe boot did not finish; using TCG ($(grep -v '^run_qemu\|Aborted' "${probe_log}.err" | tail -n 2 | tr '\n' ' '))"
    echo no >"${memo}"
  fi
  append="${saved_append}"
  rm -f "${probe_log}" "${probe_log}.err"
  [[ "$(cat "${memo}")" == yes ]]
}

main() {
  kernel="" initrd="" mem=512 smp=1 append=""
  local log_file="" socket="" tag="" accel=auto timeout_s=300
  while (($#)); do
    case "$1" in
      --kernel) kernel="$2"; shift 2 ;;
      --initrd) initrd="$2"; shift 2 ;;
      --log) log_file="$2"; shift 2 ;;
      --socket) socket="$2"; shift 2 ;;
      --tag) tag="$2"; shift 2 ;;
      --accel) accel="$2"; shift 2 ;;
      --timeout) timeout_s="$2"; shift 2 ;;
      --mem) mem="$2"; shift 2 ;;
      --smp) smp="$2"; shift 2 ;;
      --append) append="$2"; shift 2 ;;
      *) usage ;;
    esac
  done
  [[ -n "${kernel}" && -n "${initrd}" && -n "${log_file}" ]] || usage
  command -v "${QEMU}" >/dev/null || { log "${QEMU} not found"; exit 2; }

  if [[ "${accel}" == auto ]]; then
    if kvm_usable; then accel=kvm; else accel=tcg; fi
  fi

  local device=()
  if [[ -n "${socket}" ]]; then
    device=(-chardev "socket,id=char0,path=${socket}"
      -device "vhost-user-fs-pci,chardev=char0,tag=${tag:-myfs}")
    append="${append} vhostmig.tag=${tag:-myfs}"
  fi

  local start end status=0
  start="$(date +%s.%N)"
  boot "${accel}" "${timeout_s}" "${log_file}" "${device[@]}" || status=$?
  end="$(date +%s.%N)"
  local seconds result
  seconds="$(awk -v a="${start}" -v b="${end}" 'BEGIN { printf "%.1f", b - a }')"
  result="$(grep -a "${RESULT_TAG}" "${log_file}" | tail -n1 | tr -d '\r' || true)"
  echo "accel=${accel} seconds=${seconds} result=${result:-none} qemu_status=${status}"
  if ((status == 124 || status == 137)); then
    return 124
  fi
  case "${result}" in
    *"${RESULT_TAG} PASS"*) return 0 ;;
    *"${RESULT_TAG} FAIL"*) return 1 ;;
    *) return 3 ;;
  esac
}

main "$@"
