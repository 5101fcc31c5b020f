#!/usr/bin/env python3
"""Writes the seed corpus of chain_fuzz (see chain_fuzz.cc for the format).

Run from the repository root: python3 tests/fuzz/chain_seeds.py
"""
import os
import struct

NEXT, WRITE, INDIRECT = 1, 2, 4
OUT = os.path.join(os.path.dirname(__file__), "chain_corpus")


def seed(name, size_log2, descs, heads, event_idx=False, indirect=False,
         next_avail=0, written=64, extra=None, avail_idx=None):
    size = 1 << size_log2
    image = bytearray(0x4000)
    for i, (addr, length, flags, nxt) in enumerate(descs):
        struct.pack_into("<QIHH", image, 16 * i, addr, length, flags, nxt)
    avail = 16 * size
    idx = (next_avail + len(heads)) & 0xFFFF if avail_idx is None else avail_idx
    struct.pack_into("<HH", image, avail, 0, idx)
    for n, head in enumerate(heads):
        struct.pack_into("<H", image, avail + 4 + 2 * ((next_avail + n) % size),
                         head)
    for gpa, table in (extra or {}).items():
        for i, (addr, length, flags, nxt) in enumerate(table):
            struct.pack_into("<QIHH", image, gpa + 16 * i, addr, length, flags,
                             nxt)
    config = (1 if event_idx else 0) | (2 if indirect else 0) | (size_log2 << 2)
    data = struct.pack("<BHH", config, next_avail, written) + bytes(image)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data.rstrip(b"\0") or b"\0")


os.makedirs(OUT, exist_ok=True)
seed("direct_two_buffers", 3,
     [(0x1000, 16, NEXT, 1), (0x2000, 32, WRITE, 0)], [0])
seed("four_chains_event_idx", 3,
     [(0x1000, 8, NEXT, 1), (0x2000, 8, WRITE, 0), (0x1100, 8, 0, 0),
      (0x2100, 64, WRITE, 0)], [0, 2, 3, 1], event_idx=True)
seed("indirect_table", 2, [(0x3000, 32, INDIRECT, 0)], [0], indirect=True,
     extra={0x3000: [(0x1000, 16, NEXT, 1), (0x2000, 16, WRITE, 0)]})
seed("nested_indirect", 2, [(0x3000, 32, INDIRECT, 0)], [0], indirect=True,
     extra={0x3000: [(0x1000, 16, NEXT, 1), (0x3000, 32, INDIRECT, 0)]})
seed("indirect_loop", 2, [(0x3000, 32, INDIRECT, 0)], [0], indirect=True,
     extra={0x3000: [(0x1000, 16, NEXT, 1), (0x1000, 16, NEXT, 0)]})
seed("loop", 3, [(0x1000, 8, NEXT, 1), (0x1000, 8, NEXT, 0)], [0])
seed("readable_after_writable", 3,
     [(0x1000, 8, WRITE | NEXT, 1), (0x1000, 8, 0, 0)], [0])
seed("span_regions", 3, [(0xFFF0, 32, WRITE, 0)], [0], written=32)
seed("into_hole", 3, [(0x13FF0, 32, WRITE, 0)], [0])
seed("wrap_index", 3, [(0x1000, 8, WRITE, 0)], [0, 0], event_idx=True,
     next_avail=0xFFFF)
seed("avail_jump", 3, [(0x1000, 8, 0, 0)], [0], avail_idx=9)
seed("huge_lengths", 3,
     [(0x0, 0xFFFFFFFF, NEXT, 1), (0x0, 0xFFFFFFFF, WRITE, 0)], [0])
seed("head_out_of_range", 3, [], [200])
seed("indirect_with_next", 2, [(0x3000, 16, INDIRECT | NEXT, 1)], [0],
     indirect=True, extra={0x3000: [(0x1000, 16, 0, 0)]})
seed("big_queue", 7,
     [(0x3000 + 8 * i, 8, WRITE, 0) for i in range(128)], list(range(128)),
     event_idx=True)
