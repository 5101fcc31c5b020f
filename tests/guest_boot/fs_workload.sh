#!/bin/sh
# shellcheck shell=dash disable=SC2012
# Guest-side virtio-fs workload (busybox sh, run by the guest's /init as
# `sh /workload.sh /mnt`). Exercises the FUSE operations a virtio-fs back-end
# must serve: create/write/read with checksums, a 64 MiB file, rename, readdir
# of a 2000-entry directory, unlink (also of an open file), mkdir/rmdir,
# symlink, hard link, truncate, chmod, xattrs and parallel small files.
#
# Prints one `ok <step>` / `FAIL <step>: <why>` / `SKIP <step>: <why>` line per
# step and leaves its results under $1/work for tests/guest_boot/
# fs_host_check.sh to verify from the host. Exits non-zero if any step failed.

mnt="$1"
w="$mnt/work"
failures=0

ok() { echo "ok $1"; }
fail() {
  echo "FAIL $1: $2"
  failures=$((failures + 1))
}
skip() { echo "SKIP $1: $2"; }
# expect STEP WANT GOT
expect() {
  if [ "$2" = "$3" ]; then ok "$1"; else fail "$1" "want '$2', got '$3'"; fi
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
elapsed() { cut -d' ' -f1 /proc/uptime; }

t0="$(elapsed)"
rm -rf "$w"
mkdir "$w" || { echo "FAIL setup: mkdir $w"; exit 1; }

# Create, write, read back.
echo "hello from the guest" >"$w/hello.txt"
expect create-write-read "hello from the guest" "$(cat "$w/hello.txt")"
echo "second line" >>"$w/hello.txt"
expect append "2" "$(wc -l <"$w/hello.txt" | tr -d ' ')"

# A 64 MiB file: generated in the guest's RAM, copied through virtio-fs,
# read back after dropping the page cache; the host checks the same sum.
dd if=/dev/urandom of=/tmp/big bs=1M count=64 2>/dev/null
want="$(md5sum </tmp/big | cut -d' ' -f1)"
dd if=/tmp/big of="$w/big.bin" bs=1M 2>/dev/null || fail big-write "dd failed"
rm -f /tmp/big
drop_caches
expect big-read-md5 "$want" "$(md5sum <"$w/big.bin" | cut -d' ' -f1)"
expect big-size 67108864 "$(stat -c %s "$w/big.bin")"
echo "$want" >"$w/big.md5"

# Rename within and across directories.
echo "moving" >"$w/before"
mv "$w/before" "$w/after"
if [ -e "$w/before" ]; then fail rename "old name still exists"; else
  expect rename moving "$(cat "$w/after")"
fi
mkdir "$w/sub"
mv "$w/after" "$w/sub/moved"
expect rename-across-dirs moving "$(cat "$w/sub/moved")"

# readdir of a large directory.
mkdir "$w/many"
i=0
while [ "$i" -lt 2000 ]; do
  : >"$w/many/f$i"
  i=$((i + 1))
done
drop_caches
expect readdir-2000 2000 "$(ls "$w/many" | wc -l | tr -d ' ')"
expect readdir-find 2000 "$(find "$w/many" -type f | wc -l | tr -d ' ')"

# unlink, including a file that is still open.
echo "gone" >"$w/unlink-me"
rm "$w/unlink-me"
if [ -e "$w/unlink-me" ]; then fail unlink "still exists"; else ok unlink; fi
echo "still readable" >"$w/open-unlinked"
exec 3<"$w/open-unlinked"
rm "$w/open-unlinked"
expect unlink-while-open "still readable" "$(cat <&3)"
exec 3<&-

# mkdir/rmdir, nested.
mkdir -p "$w/a/b/c"
rmdir "$w/a/b/c" "$w/a/b"
if [ -d "$w/a/b" ]; then fail mkdir-rmdir "a/b still exists"; else ok mkdir-rmdir; fi
if rmdir "$w/sub" 2>/dev/null; then fail rmdir-nonempty "removed a non-empty dir"; else
  ok rmdir-nonempty
fi

# Symlink and hard link.
ln -s hello.txt "$w/link"
expect symlink-readlink hello.txt "$(readlink "$w/link")"
expect symlink-follow "hello from the guest" "$(head -n1 "$w/link")"
ln "$w/hello.txt" "$w/hard"
expect hardlink-count 2 "$(stat -c %h "$w/hello.txt")"
expect hardlink-same-inode "$(stat -c %i "$w/hello.txt")" "$(stat -c %i "$w/hard")"

# truncate: shrink, grow (zero-filled), keep.
dd if=/dev/zero of="$w/trunc" bs=1k count=10 2>/dev/null
truncate -s 1000 "$w/trunc"
expect truncate-shrink 1000 "$(stat -c %s "$w/trunc")"
truncate -s 5000 "$w/trunc"
expect truncate-grow 5000 "$(stat -c %s "$w/trunc")"

# chmod.
: >"$w/mode"
chmod 640 "$w/mode"
expect chmod 640 "$(stat -c %a "$w/mode")"
chmod 4755 "$w/mode"
expect chmod-setuid 4755 "$(stat -c %a "$w/mode")"
chmod 600 "$w/mode"

# xattrs: busybox has no setfattr/getfattr; the image may carry a static
# helper (tests/guest_boot/xattr_tool.c) at /bin/xattr_tool.
if [ -x /bin/xattr_tool ]; then
  : >"$w/xattr"
  if out="$(xattr_tool set "$w/xattr" user.vhostmig guest-value 2>&1)"; then
    : >"$w/xattr.set"
    expect xattr-get guest-value "$(xattr_tool get "$w/xattr" user.vhostmig)"
    case "$(xattr_tool list "$w/xattr")" in
      *user.vhostmig*) ok xattr-list ;;
      *) fail xattr-list "user.vhostmig not listed" ;;
    esac
    xattr_tool set "$w/xattr" user.removed x && xattr_tool remove "$w/xattr" user.removed
    if xattr_tool get "$w/xattr" user.removed >/dev/null 2>&1; then
      fail xattr-remove "still present"
    else ok xattr-remove; fi
  else
    case "$out" in
      *"not supported"*) skip xattr "back-end does not support xattrs ($out)" ;;
      *) fail xattr-set "$out" ;;
    esac
  fi
else
  skip xattr "busybox has no setfattr and no /bin/xattr_tool in the image"
fi

# Many small files written in parallel by background jobs.
mkdir "$w/parallel"
for job in 1 2 3 4; do
  (
    n=0
    while [ "$n" -lt 100 ]; do
      echo "job $job file $n" >"$w/parallel/j$job-$n"
      n=$((n + 1))
    done
  ) &
done
wait
drop_caches
expect parallel-count 400 "$(ls "$w/parallel" | wc -l | tr -d ' ')"
expect parallel-content "job 3 file 77" "$(cat "$w/parallel/j3-77")"
bad=0
for f in "$w"/parallel/*; do
  name="${f##*/j}"
  [ "$(cat "$f")" = "job ${name%%-*} file ${name#*-}" ] || bad=$((bad + 1))
done
expect parallel-all-contents 0 "$bad"

# statfs and fsync.
if df "$mnt" >/dev/null 2>&1; then ok statfs; else fail statfs "df failed"; fi
sync && ok fsync

t1="$(elapsed)"
echo "workload: $failures failure(s) in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')s"
echo "$failures" >"$w/guest-failures"
[ "$failures" -eq 0 ]
