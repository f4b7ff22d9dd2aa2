#!/usr/bin/env python3
"""Writes the MQTT 5 seeds into fuzz/seeds/packets (v5_*): every packet a server sends with
every property it may carry, the client's packets, and hostile ones. Run from the repository
root: python3 fuzz/seeds/v5_seeds.py"""
import os

def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)

def s(text):
    b = text.encode() if isinstance(text, str) else text
    return len(b).to_bytes(2, "big") + b

def u16(n): return n.to_bytes(2, "big")
def u32(n): return n.to_bytes(4, "big")
def props(*ps): body = b"".join(ps); return varint(len(body)) + body
def packet(first, body): return bytes([first]) + varint(len(body)) + body

USER = b"\x26" + s("k") + s("v")
REASON = b"\x1f" + s("why")
CONNACK_PROPS = props(
    b"\x11" + u32(60), b"\x21" + u16(2), b"\x24\x01", b"\x25\x00", b"\x27" + u32(1 << 20),
    b"\x12" + s("auto-7"), b"\x22" + u16(10), REASON, USER, b"\x28\x01", b"\x29\x01",
    b"\x2a\x00", b"\x13" + u16(30), b"\x1a" + s("resp/"), b"\x1c" + s("b.example"),
    b"\x15" + s("SCRAM"), b"\x16" + s(b"\x00\x01"))
PUBLISH_PROPS = props(
    b"\x01\x01", b"\x02" + u32(600), b"\x23" + u16(1), b"\x08" + s("reply/to"),
    b"\x09" + s(b"\x01\x02"), USER, USER, b"\x0b\x05", b"\x0b\x80\x01", b"\x03" + s("text/plain"))

seeds = {
    "connack": packet(0x20, b"\x00\x00" + CONNACK_PROPS),
    "connack_refused": packet(0x20, b"\x00\x87" + props(REASON)),
    "publish_all_properties": packet(0x32, s("a/b") + u16(1) + PUBLISH_PROPS + b"payload"),
    "publish_alias_only": packet(0x30, s("") + props(b"\x23" + u16(1)) + b"x"),
    "publish_no_properties": packet(0x30, s("a") + b"\x00" + b"hello"),
    "puback_short": packet(0x40, u16(1)),
    "puback_code": packet(0x40, u16(1) + b"\x10"),
    "puback_refused": packet(0x40, u16(1) + b"\x87" + props(REASON, USER)),
    "pubrec_refused": packet(0x50, u16(2) + b"\x80" + props(REASON)),
    "pubrel": packet(0x62, u16(3) + b"\x92" + props()),
    "pubcomp": packet(0x70, u16(4) + b"\x00" + props(USER)),
    "suback": packet(0x90, u16(5) + props(REASON) + b"\x00\x01\x02\x87\xa2"),
    "unsuback": packet(0xb0, u16(6) + props() + b"\x00\x11\x87"),
    "pingresp": packet(0xd0, b""),
    "disconnect_moved": packet(0xe0, b"\x9d" + props(REASON, b"\x1c" + s("b.example:8883"), b"\x11" + u32(0))),
    "disconnect_normal": packet(0xe0, b""),
    "auth": packet(0xf0, b"\x18" + props(b"\x15" + s("SCRAM"), b"\x16" + s(b"x"), REASON)),
    "connect": packet(0x10, s("MQTT") + b"\x05\xc6" + u16(60)
        + props(b"\x11" + u32(60), b"\x21" + u16(20), b"\x27" + u32(1 << 20), b"\x22" + u16(64), USER)
        + s("client") + props() + s("will/t") + s("bye") + s("user") + s("pw")),
    "subscribe": packet(0x82, u16(7) + props(b"\x0b\x01") + s("a/#") + b"\x2d"),
    "unsubscribe": packet(0xa2, u16(8) + props() + s("a/#")),
    # Hostile: each must be refused.
    "hostile_duplicate_property": packet(0x40, u16(1) + b"\x80" + props(REASON, REASON)),
    "hostile_property_not_allowed": packet(0x40, u16(1) + b"\x80" + props(b"\x23" + u16(1))),
    "hostile_alias_zero": packet(0x30, s("a") + props(b"\x23" + u16(0)) + b"x"),
    "hostile_empty_topic_no_alias": packet(0x30, s("") + b"\x00" + b"x"),
    "hostile_property_length_past_end": packet(0x20, b"\x00\x00\x7f"),
    "hostile_receive_maximum_zero": packet(0x20, b"\x00\x00" + props(b"\x21" + u16(0))),
    "hostile_subscription_id_zero": packet(0x30, s("a") + props(b"\x0b\x00") + b"x"),
    "hostile_bad_utf8_reason": packet(0x40, u16(1) + b"\x80" + props(b"\x1f" + s(b"\xff\xfe"))),
}
seeds["stream"] = b"".join(seeds[k] for k in ["connack", "publish_all_properties", "publish_alias_only", "puback_refused", "suback", "pingresp", "disconnect_moved"])

out = "fuzz/seeds/packets"
for name, data in seeds.items():
    with open(os.path.join(out, "v5_" + name), "wb") as f:
        f.write(data)
    # The decode target's first byte picks the chunking.
    with open(os.path.join(out, "chunked_v5_" + name), "wb") as f:
        f.write(b"\x07" + data)
