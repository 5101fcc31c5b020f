#!/usr/bin/env python3
"""Writes the seed corpora of backend_session_fuzz (tests/fuzz/backend_corpus)
and frontend_reply_fuzz (tests/fuzz/frontend_corpus), in the input formats
their sources describe. Re-run after changing a format:
  python3 tests/fuzz/vhost_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# Front-end requests (vhost-user.rst).
(GET_FEATURES, SET_FEATURES, SET_OWNER, RESET_OWNER, SET_MEM_TABLE,
 SET_LOG_BASE, SET_LOG_FD, SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE,
 GET_VRING_BASE, SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR,
 GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
 SET_VRING_ENABLE) = range(1, 19)
GET_CONFIG, SET_CONFIG = 24, 25
RESET_DEVICE, GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG = 34, 36, 37, 38
SET_STATUS, GET_STATUS = 39, 40
SET_DEVICE_STATE_FD, CHECK_DEVICE_STATE = 42, 43

V1, REPLY, NEED_REPLY = 0x1, 0x4, 0x8
FEATURES = (1 << 32) | (1 << 30) | (1 << 29) | (1 << 26)
PROTOCOL = (1 << 1) | (1 << 3) | (1 << 9) | (1 << 16) | (1 << 19)
UADDR = 0x7F0000000000
MEMFD, EVENTFD, PIPE_R, PIPE_W = 0, 1, 2, 3


def fds(*kinds):
    spec = len(kinds)
    for i, k in enumerate(kinds):
        spec |= k << (2 + 2 * i)
    return spec


def rec(request, payload=b"", flags=V1, fd_spec=0):
    return struct.pack("<BBBH", fd_spec, request, flags, len(payload)) + payload


def u64(v):
    return struct.pack("<Q", v)


def state(i, n):
    return struct.pack("<II", i, n)


def vring_addr(i, flags=0, log=0):
    return struct.pack("<IIQQQQ", i, flags, UADDR, UADDR + 0x1000,
                       UADDR + 0x800, log)


def image():
    """A 16-entry ring at GPA 0: one 2-descriptor chain (a FUSE GETATTR-sized
    readable buffer and a writable one), avail idx 1."""
    desc = struct.pack("<QIHH", 0x2000, 56, 1, 1)  # NEXT
    desc += struct.pack("<QIHH", 0x3000, 128, 2, 0)  # WRITE
    desc = desc.ljust(0x800, b"\0")
    avail = struct.pack("<HH", 0, 1) + struct.pack("<H", 0)
    img = (desc + avail).ljust(0x2000, b"\0")
    # fuse_in_header GETATTR(3) on the root + fuse_getattr_in
    img += struct.pack("<IIQQIIIHH", 56, 3, 9, 1, 0, 0, 0, 0, 0)
    img += struct.pack("<IIQ", 0, 0, 0)
    return img


def with_image(img, records):
    return struct.pack("<H", len(img)) + img + b"".join(records)


SETUP = [
    rec(GET_FEATURES),
    rec(GET_PROTOCOL_FEATURES),
    rec(SET_OWNER),
    rec(SET_PROTOCOL_FEATURES, u64(PROTOCOL)),
    rec(SET_FEATURES, u64(FEATURES & ~(1 << 26))),
    rec(SET_MEM_TABLE, struct.pack("<II", 1, 0) +
        struct.pack("<QQQQ", 0, 1 << 16, UADDR, 0), V1 | NEED_REPLY,
        fds(MEMFD)),
]
RING = [
    rec(SET_VRING_NUM, state(0, 16)),
    rec(SET_VRING_BASE, state(0, 0)),
    rec(SET_VRING_ADDR, vring_addr(0)),
    rec(SET_VRING_CALL, u64(0), V1, fds(EVENTFD)),
    rec(SET_VRING_KICK, u64(0), V1, fds(EVENTFD)),
    rec(SET_VRING_ENABLE, state(0, 1), V1 | NEED_REPLY),
]

BACKEND = {
    "negotiate": with_image(b"", SETUP[:5] + [rec(GET_QUEUE_NUM),
                                              rec(GET_CONFIG, struct.pack(
                                                  "<III", 0, 40, 0) + bytes(40)),
                                              rec(GET_STATUS)]),
    "ring_running": with_image(image(), SETUP + RING + [
        rec(GET_VRING_BASE, state(0, 0))]),
    "log_all": with_image(image(), SETUP + RING + [
        rec(SET_LOG_BASE, u64(1 << 12) + u64(0), V1, fds(MEMFD)),
        rec(SET_FEATURES, u64(FEATURES)),
        rec(SET_VRING_ADDR, vring_addr(0, 1, 0x1000)),
        rec(SET_VRING_KICK, u64(0x100)),
        rec(GET_VRING_BASE, state(0, 0)),
        rec(SET_FEATURES, u64(FEATURES & ~(1 << 26)))]),
    "state_save": with_image(b"", SETUP[:5] + [
        rec(SET_DEVICE_STATE_FD, state(0, 0), V1, fds(PIPE_W)),
        rec(CHECK_DEVICE_STATE)]),
    "state_load": with_image(b"", SETUP[:5] + [
        rec(SET_DEVICE_STATE_FD, state(1, 0), V1, fds(PIPE_R)),
        rec(CHECK_DEVICE_STATE)]),
    "mem_regions": with_image(b"", SETUP[:5] + [
        rec(GET_MAX_MEM_SLOTS),
        rec(ADD_MEM_REG, u64(0) + struct.pack("<QQQQ", 0x100000, 1 << 16,
                                              UADDR + 0x100000, 0),
            V1 | NEED_REPLY, fds(MEMFD)),
        rec(REM_MEM_REG, u64(0) + struct.pack("<QQQQ", 0x100000, 1 << 16,
                                              UADDR + 0x100000, 0)),
        rec(SET_MEM_TABLE, struct.pack("<II", 2, 0) +
            struct.pack("<QQQQ", 0, 1 << 20, UADDR, 0) +
            struct.pack("<QQQQ", 1 << 20, 1 << 16, UADDR + (1 << 20), 0),
            V1 | NEED_REPLY, fds(MEMFD, MEMFD))]),
    "reset_and_junk": with_image(image(), SETUP + RING + [
        rec(RESET_DEVICE), rec(SET_STATUS, u64(0)), rec(99, b"x" * 9),
        rec(SET_VRING_NUM, state(7, 3)), rec(RESET_OWNER),
        rec(SET_VRING_KICK, u64(0), V1, fds(PIPE_R, EVENTFD, MEMFD))]),
}

# frontend_reply_fuzz: ops, then replies [control][request][flags][len][...].
ECHO_REPLY = 0x3


def reply(payload=b"", control=ECHO_REPLY, request=0, flags=0, nfds=0):
    return struct.pack("<BBBB", control | (nfds << 2), request, flags,
                       len(payload)) + payload


def ops(*codes):
    return bytes([len(codes)]) + bytes(codes)


HANDSHAKE = [reply(u64(FEATURES)), reply(u64(PROTOCOL))]
ACK = reply(u64(0))

FRONTEND = {
    "handshake_only": ops() + b"".join(HANDSHAKE),
    "acked_session": ops(3, 4, 1, 9, 14, 15, 16, 19, 18, 20, 17) +
    b"".join(HANDSHAKE + [ACK] * 9 + [reply(u64(5))]),
    "state_fd": ops(3, 23, 24, 23 | 0x80, 24) + b"".join(
        HANDSHAKE + [ACK, reply(u64(0x100)), reply(u64(0)),
                     reply(u64(0), nfds=1), reply(u64(1))]),
    "config_and_status": ops(21, 8, 5, 12) + b"".join(
        HANDSHAKE + [reply(struct.pack("<III", 0, 40, 0) + bytes(40)),
                     reply(b"\x0f" + bytes(7)), reply(u64(2)), reply(u64(32))]),
    "wrong_replies": ops(0, 2, 5, 17, 21) + b"".join(
        HANDSHAKE + [reply(u64(1), control=0x2, request=GET_QUEUE_NUM),
                     reply(b"\x01", control=0x1, flags=V1),
                     reply(u64(1), control=0x3 | (3 << 2)),
                     reply(b"", control=0x3),
                     reply(bytes(300)[:255])]),
    "inflight_postcopy_shared": ops(25, 26, 27, 28) + b"".join(
        HANDSHAKE + [reply(struct.pack("<QQHH", 4096, 0, 2, 16) + bytes(4),
                           nfds=1),
                     reply(u64(0), nfds=1), reply(u64(0)),
                     reply(bytes(8))]),
}


def main():
    for sub, seeds in (("backend_corpus", BACKEND),
                       ("frontend_corpus", FRONTEND)):
        out = os.path.join(HERE, sub)
        os.makedirs(out, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
