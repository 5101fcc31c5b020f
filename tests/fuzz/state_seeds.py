#!/usr/bin/env python3
"""Writes the seed corpus of state_loader_fuzz (tests/fuzz/state_corpus).

Each seed is a device-state stream (proto/fs_state.proto, framed as in
docs/state-format.md), hand-encoded so that no protobuf Python package is
needed. Re-run after a format change:  python3 tests/fuzz/state_seeds.py
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "state_corpus")
MAGIC = 0x53464D56


def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    return varint((num << 3) | wire) + payload


def u(num, v):
    return field(num, 0, varint(v))


def msg(num, body):
    return field(num, 2, varint(len(body)) + body)


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def frame(payload):
    return struct.pack("<II", len(payload), crc32c(payload)) + payload


def header(version=1, oldest=1, mode=1):
    return (field(1, 5, struct.pack("<I", MAGIC)) + u(2, version) +
            u(3, oldest) + u(4, mode))


def inode(node, typ, lookups=1, parent=None, name=None, root=False,
          handle=None):
    body = u(1, node) + u(2, lookups) + u(3, typ)
    if root:
        body += u(5, 1)
    if parent is not None:
        body += msg(6, u(1, parent) + msg(2, name))
    if handle is not None:
        body += msg(7, u(1, 1) + msg(2, handle) + u(3, 0))
    return msg(1, body)


def handle(fh, node, flags=0, is_dir=False):
    return msg(2, u(1, fh) + u(2, node) + u(3, flags) + u(4, int(is_dir)))


def tail(inodes, handles, chunks, next_node=100, next_fh=100, session=b""):
    return (msg(3, u(1, next_node) + u(2, next_fh)) + msg(4, session) +
            msg(5, u(1, inodes) + u(2, handles) + u(3, chunks)))


S_IFREG, S_IFDIR = 0o100000, 0o040000
ROOT = inode(1, S_IFDIR, root=True)


def stream(records, n_inodes, n_handles, **kw):
    return (frame(header(**{k: v for k, v in kw.items()
                            if k in ("version", "oldest", "mode")})) +
            frame(records) + frame(tail(n_inodes, n_handles, 2)))


def zigzag(v):
    return (v << 1) if v >= 0 else ((-v) << 1) - 1


def packed(num, values):
    if not values:
        return b""
    body = b"".join(varint(v) for v in values)
    return field(num, 2, varint(len(body)) + body)


KIND_ROOT, KIND_PATH, KIND_HANDLE, KIND_ONE = 8, 16, 32, 64
CODE_REG, CODE_DIR = 0, 1


def inode_columns(records):
    """Format 2 InodeColumns (StateChunk field 6) for records given as
    (node, kind, lookups, parent, name, ino, handle)."""
    node_d, kinds, lookups, parent_d, shared, ino_d = [], [], [], [], [], []
    suffixes, handles = b"", b""
    prev = {"node": 0, "parent": 0, "ino": 0, "name": b""}
    for node, kind, nl, parent, name, ino, hnd in records:
        node_d.append(node - prev["node"])
        prev["node"] = node
        kinds.append(kind)
        if not kind & KIND_ONE:
            lookups.append(nl)
        if kind & KIND_PATH:
            parent_d.append(zigzag(parent - prev["parent"]))
            prev["parent"] = parent
            n = 0
            while (n < min(len(name), len(prev["name"])) and
                   name[n] == prev["name"][n]):
                n += 1
            shared.append(n)
            suffixes += name[n:] + b"\0"
            prev["name"] = name
        ino_d.append(zigzag(ino - prev["ino"]))
        prev["ino"] = ino
        if kind & KIND_HANDLE:
            handles += msg(10, u(1, 1) + msg(2, hnd) + u(3, 0))
    body = (packed(1, node_d) + packed(2, kinds) + packed(3, lookups) +
            packed(4, parent_d) + packed(5, shared) +
            (msg(6, suffixes) if suffixes else b"") + packed(7, ino_d) +
            handles)
    return msg(6, body)


def handle_columns(handles):
    """Format 2 HandleColumns (StateChunk field 7): (fh, node, flags, dir)."""
    fh_d, node_d, flags = [], [], []
    pfh, pnode = 0, 0
    for fh, node, fl, is_dir in handles:
        fh_d.append(fh - pfh)
        node_d.append(zigzag(node - pnode))
        flags.append((fl << 1) | int(is_dir))
        pfh, pnode = fh, node
    return msg(7, packed(1, fh_d) + packed(2, node_d) + packed(3, flags))


COL_ROOT = (1, CODE_DIR | KIND_ROOT | KIND_ONE, 1, None, None, 100, None)


def col_stream(records, handles=(), n_inodes=None, n_handles=None):
    return (frame(header(version=2, oldest=2)) +
            frame(inode_columns(records) +
                  (handle_columns(handles) if handles else b"")) +
            frame(tail(len(records) if n_inodes is None else n_inodes,
                       len(handles) if n_handles is None else n_handles, 2)))


SEEDS = {
    "columns": col_stream(
        [COL_ROOT,
         (2, CODE_DIR | KIND_PATH | KIND_ONE, 1, 1, b"dir", 101, None),
         (3, CODE_REG | KIND_PATH, 3, 2, b"inner", 102, None),
         (4, CODE_REG | KIND_PATH | KIND_ONE, 1, 2, b"inter", 103, None),
         (5, CODE_REG | KIND_PATH | KIND_ONE, 1, 1, b"file", 99, None)],
        [(6, 2, 0, True), (7, 3, 2, False)]),
    "columns_handle": (
        frame(header(version=2, oldest=2, mode=2)) +
        frame(inode_columns(
            [COL_ROOT,
             (2, CODE_REG | KIND_HANDLE | KIND_ONE, 1, None, None, 5,
              b"\x01" * 8),
             (3, CODE_REG | KIND_HANDLE | KIND_PATH | KIND_ONE, 1, 1,
              b"file", 6, b"\x02" * 8)]) + handle_columns([(4, 2, 0, False)])) +
        frame(tail(3, 1, 2))),
    "columns_unlocated": col_stream(
        [COL_ROOT, (2, CODE_REG | KIND_ONE, 1, None, None, 7, None)]),

    "root_only": stream(ROOT, 1, 0),
    "file_and_handle": stream(
        ROOT + inode(2, S_IFREG, parent=1, name=b"file") + handle(5, 2, 2),
        2, 1),
    "nested": stream(
        ROOT + inode(2, S_IFDIR, parent=1, name=b"dir") +
        inode(3, S_IFREG, parent=2, name=b"inner") + handle(4, 2, 0o200000,
                                                            True) +
        handle(5, 3, 0), 3, 2),
    "unlocated": stream(ROOT + inode(2, S_IFREG), 2, 0),
    "file_handle": stream(
        ROOT + inode(2, S_IFREG, handle=b"\x01" * 8, parent=1, name=b"file"),
        2, 0, mode=2),
    "cycle": stream(
        ROOT + inode(2, S_IFDIR, parent=3, name=b"a") +
        inode(3, S_IFDIR, parent=2, name=b"b"), 3, 0),
    "dotdot": stream(ROOT + inode(2, S_IFDIR, parent=1, name=b".."), 2, 0),
    "newer_version": stream(ROOT, 1, 0, version=9, oldest=9),
    "session": (frame(header()) + frame(ROOT) + frame(tail(
        1, 0, 2, session=u(1, 1) + u(2, 7) + u(3, 31) + u(4, 1)))),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(SEEDS), OUT))


if __name__ == "__main__":
    main()
