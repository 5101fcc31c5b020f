#!/usr/bin/env python3
"""Writes the seed corpus of fuse_dispatch_fuzz (tests/fuzz/fuse_corpus).

Each seed is a sequence of FUSE requests in the target's record format
([u8 control][u16 LE length][fuse_in_header + arguments]); the target sends
FUSE_INIT first. Node ids assume the daemon numbers inodes from 2 in lookup
order (the fuzzer varies them anyway). The shared tree is
{file, dir/inner, out-link -> ../outside/secret, abs-link -> /abs/outside/secret}.
Re-run after changing the format:  python3 tests/fuzz/fuse_seeds.py
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuse_corpus")

LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK = 1, 2, 3, 4, 5, 6
MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, OPEN, READ, WRITE = (
    8, 9, 10, 11, 12, 13, 14, 15, 16)
STATFS, RELEASE, FSYNC, SETXATTR, GETXATTR, LISTXATTR = 17, 18, 20, 21, 22, 23
OPENDIR, READDIR, RELEASEDIR, CREATE, READDIRPLUS, RENAME2, LSEEK = (
    27, 28, 29, 35, 44, 45, 46)
COPY_FILE_RANGE, BATCH_FORGET = 47, 42
ROOT = 1
FULL_OUT = (16 << 2) | 1  # 4 KiB writable, fix up the header's len

unique = [2]


def req(opcode, nodeid, body=b"", control=FULL_OUT):
    unique[0] += 1
    header = struct.pack("<IIQQIIIHH", 40 + len(body), opcode, unique[0],
                         nodeid, 0, 0, 1, 0, 0)
    data = header + body
    return struct.pack("<BH", control, len(data)) + data


def name(s):
    return s.encode() + b"\0"


def open_in(flags=os.O_RDONLY):
    return struct.pack("<II", flags, 0)


def rw_in(fh, offset, size):
    return struct.pack("<QQIIQII", fh, offset, size, 0, 0, 0, 0)


SEEDS = {
    "lookup_file_read": [
        req(LOOKUP, ROOT, name("file")),
        req(OPEN, 2, open_in()),
        req(READ, 2, rw_in(0, 0, 4096)),
        req(RELEASE, 2, struct.pack("<QIIQ", 0, 0, 0, 0)),
    ],
    "lookup_dotdot": [
        req(LOOKUP, ROOT, name("..")),
        req(LOOKUP, ROOT, name(".")),
        req(LOOKUP, ROOT, name("dir")),
        req(LOOKUP, 2, name("..")),
        req(LOOKUP, 2, name("../outside")),
        req(LOOKUP, ROOT, name("../outside/secret")),
    ],
    "symlink_follow": [
        req(LOOKUP, ROOT, name("out-link")),
        req(READLINK, 2),
        req(OPEN, 2, open_in()),
        req(READ, 2, rw_in(0, 0, 4096)),
        req(LOOKUP, ROOT, name("abs-link")),
        req(OPEN, 3, open_in(os.O_RDWR)),
        req(GETATTR, 3, struct.pack("<IIQ", 0, 0, 0)),
    ],
    "create_write_rename": [
        req(CREATE, ROOT, struct.pack("<IIII", os.O_RDWR | os.O_CREAT,
                                      0o644, 0, 0) + name("new")),
        req(WRITE, 2, rw_in(0, 0, 5) + b"hello"),
        req(RENAME, ROOT, struct.pack("<Q", ROOT) + name("new") +
            name("../outside/new")),
        req(RENAME2, ROOT, struct.pack("<QII", ROOT, 0, 0) + name("new") +
            name("renamed")),
        req(UNLINK, ROOT, name("renamed")),
    ],
    "mkdir_symlink_link": [
        req(MKDIR, ROOT, struct.pack("<II", 0o755, 0) + name("sub")),
        req(SYMLINK, 2, name("l") + name("/etc/passwd")),
        req(LOOKUP, ROOT, name("file")),
        req(LINK, 2, struct.pack("<Q", 3) + name("hard")),
        req(RMDIR, ROOT, name("sub")),
    ],
    "readdir_root": [
        req(OPENDIR, ROOT, open_in()),
        req(READDIR, ROOT, rw_in(0, 0, 4096)),
        req(READDIRPLUS, ROOT, rw_in(0, 0, 4096)),
        req(RELEASEDIR, ROOT, struct.pack("<QIIQ", 0, 0, 0, 0)),
    ],
    "crafted_nodeids": [
        req(GETATTR, 0xFFFFFFFFFFFFFFFF, struct.pack("<IIQ", 0, 0, 0)),
        req(GETATTR, 0, struct.pack("<IIQ", 0, 0, 0)),
        req(READ, 7, rw_in(12345, 0, 4096)),
        req(FORGET, ROOT, struct.pack("<Q", 1 << 40)),
        req(LOOKUP, 99, name("x")),
    ],
    "xattr_statfs_lseek": [
        req(SETXATTR, ROOT, struct.pack("<IIII", 3, 0, 0, 0) + name("user.a") +
            b"val"),
        req(GETXATTR, ROOT, struct.pack("<II", 64, 0) + name("user.a")),
        req(LISTXATTR, ROOT, struct.pack("<II", 64, 0)),
        req(STATFS, ROOT),
        req(LOOKUP, ROOT, name("file")),
        req(OPEN, 2, open_in()),
        req(LSEEK, 2, struct.pack("<QQII", 0, 0, 3, 0)),
    ],
    "short_and_split": [
        req(LOOKUP, ROOT, name("file"), control=(16 << 2) | 3),
        req(GETATTR, 2, b"", control=0),
        req(READ, 2, rw_in(0, 0, 1 << 20), control=(1 << 2) | 1),
    ],
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name_, records in SEEDS.items():
        with open(os.path.join(OUT, name_), "wb") as f:
            f.write(b"".join(records))


if __name__ == "__main__":
    main()
