#!/usr/bin/env python3
"""Writes the seed corpus of agent_request_fuzz (tests/fuzz/agent_corpus).

An input is a list of records [u8 kind][u16le length][payload] (see
tests/fuzz/agent_request_fuzz.cc): a request of one of the agent's RPCs
(proto/agent.proto), Transfer frames for the agent's stream, the wire
decoder or a GrpcTransport's reader, or a string for a validator. Messages
are hand-encoded so that no protobuf Python package is needed. Re-run after
an API change:  python3 tests/fuzz/agent_seeds.py
"""
import base64
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "agent_corpus")

(START_DEVICE, STOP_DEVICE, CREATE_GUEST, DESTROY_GUEST, VERIFY_GUEST, LIST,
 PREPARE, PERFORM, COMMIT, CONFIRM, CANCEL, STATUS, RESOLVE, WATCH, TRANSFER,
 DECODE, TRANSPORT, VALIDATORS) = range(18)

# Persisted records the fuzz agent starts with (kStateFile in the target).
IN_DOUBT_ID = "00000000000000aa"
INTERRUPTED_ID = "00000000000000bb"
COMPLETED_ID = "00000000000000cc"

# Enum values (proto/agent.proto).
PRE_COPY, HANDOVER = 3, 8
RESUME_SOURCE, DESTROY_SOURCE, KEEP_PAUSED = 1, 2, 3


def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def u(num, v):
    return varint(num << 3) + varint(v)


def ld(num, body):
    if isinstance(body, str):
        body = body.encode()
    return varint((num << 3) | 2) + varint(len(body)) + body


def record(kind, payload):
    return struct.pack("<BH", kind, len(payload)) + payload


def frames(*fs):
    return b"".join(struct.pack("<H", len(f)) + f for f in fs)


def spec(regions=(1 << 20,), queue_size=64, files=2, max_blocks=8):
    packed = b"".join(varint(r) for r in regions)
    return (ld(1, packed) + u(2, queue_size) + u(3, files) +
            u(4, max_blocks) + u(5, 3) + u(6, 7))


# TransferFrame kinds.
def f_open(mid, token, window=4 << 20):
    return ld(1, ld(1, mid) + ld(2, token) + u(3, window))


def f_hello():
    region = u(1, 0) + u(2, 1 << 20)
    return ld(2, ld(1, region) + u(2, 1 << 32) + u(3, 1))


def f_pages(round_no=1, first=0, count=1, data=b"\x5a" * 4096, flags=0):
    extent = u(1, first) + u(2, count) + u(3, flags) + ld(4, data)
    return ld(3, u(1, round_no) + ld(2, extent))


def f_stopped():
    ring = (u(1, 1) + u(2, 64) + u(3, 0) + u(4, 0x1000) + u(5, 0x3000) +
            u(6, 0x2000) + u(7, 0) + u(8, 17))
    return ld(4, ld(1, ring) + ld(2, b"guest-state"))


def f_chunk(data=b"state" * 10):
    return ld(5, data)


def f_end(total=50):
    return u(6, total)


F_READY = ld(7, b"")
F_COMMIT = ld(8, b"")


def f_abort(reason="cancelled"):
    return ld(9, ld(1, reason))


def f_credit(n=4096):
    return u(10, n)


def f_started(h=0x1234):
    return ld(11, u(1, h))


SEEDS = {
    # One valid request of each RPC.
    "start_device_attach": record(
        START_DEVICE, ld(1, "fs0") + ld(3, "/fuzz/refused.sock")),
    "start_device_shared_dir": record(
        START_DEVICE, ld(1, "fs1") + ld(2, "/fuzz/dir")),
    "stop_device": record(STOP_DEVICE, ld(1, "fs0")),
    "create_guest": record(
        CREATE_GUEST, ld(1, "fs0") + ld(2, spec()) + u(3, 4)),
    "destroy_guest": record(DESTROY_GUEST, ld(1, "fs0")),
    "verify_guest": record(VERIFY_GUEST, ld(1, "fs0")),
    "list": record(LIST, b""),
    "prepare": record(PREPARE, ld(1, "fs0") + ld(2, spec()) + u(3, 1000)),
    "perform": record(
        PERFORM,
        ld(1, "fs0") + ld(2, "127.0.0.1:7345") + ld(3, "0123456789abcdef") +
        ld(4, "00112233445566778899aabbccddeeff") +
        ld(5, u(1, 300) + u(2, 100) + u(3, 30) + u(4, 1) + u(5, PRE_COPY))),
    "commit": record(COMMIT, ld(1, IN_DOUBT_ID)),
    "confirm": record(CONFIRM, ld(1, COMPLETED_ID)),
    "cancel": record(CANCEL, ld(1, INTERRUPTED_ID)),
    "status": record(STATUS, ld(1, IN_DOUBT_ID)),
    "watch": record(WATCH, ld(1, COMPLETED_ID)),
    "resolve_keep": record(RESOLVE, ld(1, IN_DOUBT_ID) + u(2, KEEP_PAUSED)),
    "resolve_resume": record(
        RESOLVE, ld(1, IN_DOUBT_ID) + u(2, RESUME_SOURCE)),
    "resolve_destroy": record(
        RESOLVE, ld(1, IN_DOUBT_ID) + u(2, DESTROY_SOURCE)),
    # Refused ones.
    "start_device_bad_name": record(
        START_DEVICE, ld(1, "../etc") + ld(2, "/fuzz/dir")),
    "start_device_relative": record(
        START_DEVICE, ld(1, "fs0") + ld(2, "shared/../..")),
    "start_device_control_chars": record(
        START_DEVICE, ld(1, "fs0") + ld(2, "/tmp/\x1b[31mred\n")),
    "start_device_no_backend": record(START_DEVICE, ld(1, "fs0")),
    "create_guest_huge": record(
        CREATE_GUEST, ld(1, "fs0") + ld(2, spec(regions=(1 << 40,)))),
    "perform_bad_address": record(
        PERFORM, ld(1, "fs0") + ld(2, "not an address") + ld(3, "00ff") +
        ld(4, "00ff")),
    "perform_cancel_at_handover": record(
        PERFORM, ld(1, "fs0") + ld(2, "h:1") + ld(3, "00ff") + ld(4, "00ff") +
        ld(5, u(5, HANDOVER))),
    "resolve_unspecified": record(RESOLVE, ld(1, IN_DOUBT_ID)),
    "unparsable_request": record(START_DEVICE, b"\x0a\xff\xff\xff\x0f"),
    # libFuzzer's first finding, as it found it: a shared_dir with a tab,
    # echoed raw into the error message (fixed: QuoteForMessage).
    "regress_tab_in_shared_dir": base64.b64decode("ABAACgNmczESCS9mczESCS9mcg=="),
    # Sessions: state built up by earlier requests.
    "session_device": (
        record(START_DEVICE, ld(1, "fs0") + ld(3, "/fuzz/refused.sock")) +
        record(CREATE_GUEST, ld(1, "fs0")) +
        record(PREPARE, ld(1, "fs0")) +
        record(START_DEVICE, ld(1, "fs0") + ld(3, "/fuzz/refused.sock")) +
        record(LIST, b"") + record(STOP_DEVICE, ld(1, "fs0")) +
        record(STOP_DEVICE, ld(1, "fs0"))),
    "session_in_doubt": (
        record(STATUS, ld(1, IN_DOUBT_ID)) +
        record(WATCH, ld(1, IN_DOUBT_ID)) +
        record(START_DEVICE, ld(1, "fs0") + ld(3, "/fuzz/refused.sock")) +
        record(CREATE_GUEST, ld(1, "fs0")) +
        record(RESOLVE, ld(1, IN_DOUBT_ID) + u(2, RESUME_SOURCE)) +
        record(RESOLVE, ld(1, IN_DOUBT_ID) + u(2, RESUME_SOURCE)) +
        record(CREATE_GUEST, ld(1, "fs0"))),
    # The Transfer RPC: refused at the first frame (no migration prepared).
    "transfer_open_unknown": record(
        TRANSFER, frames(f_open("0123456789abcdef", "00" * 16), f_hello())),
    "transfer_open_bad_token": record(
        TRANSFER, frames(f_open("0123456789abcdef", "NOT HEX"))),
    "transfer_not_open": record(TRANSFER, frames(f_hello())),
    "transfer_empty": record(TRANSFER, b""),
    # A whole source-side stream, for the decoder and the transport reader.
    "decode_stream": record(
        DECODE,
        frames(f_hello(), f_pages(), f_stopped(), f_chunk(), f_end(), F_READY,
               F_COMMIT, f_abort())),
    "transport_stream": record(
        TRANSPORT,
        frames(f_credit(0), f_hello(), f_pages(), f_credit(), f_stopped(),
               f_chunk(), f_end(), F_READY, F_COMMIT, f_started())),
    # A batch accounted at more than the reader's 64 KiB window (24 bytes
    # per extent, 2 on the wire), then one message more: an overrun.
    "transport_overrun": record(
        TRANSPORT,
        frames(f_hello(), ld(3, u(1, 1) + ld(2, b"") * 3000), F_READY)),
    "transport_bad_frame": record(
        TRANSPORT, frames(f_hello(), f_open("00", "00"), F_READY)),
    "transport_bad_ring": record(
        TRANSPORT,
        frames(ld(4, ld(1, u(1, 0) + u(2, 0) + u(8, 1 << 20))), F_READY)),
    # Validators on raw strings ([selector][string]).
    "validate_name": record(VALIDATORS, b"\x00fs-0.a_b"),
    "validate_hex": record(VALIDATORS, b"\x01deadbeef"),
    "validate_path": record(VALIDATORS, b"\x02/srv/shared/dir"),
    "validate_socket_path": record(VALIDATORS, b"\x03/tmp/vhost.sock"),
    "validate_address": record(VALIDATORS, b"\x04[::1]:7345"),
    "validate_spec": record(VALIDATORS, b"\x05" + spec()),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        os.remove(os.path.join(OUT, name))
    for name, data in sorted(SEEDS.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds to {OUT}")


if __name__ == "__main__":
    main()
