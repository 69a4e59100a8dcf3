"""Property tests for the link-layer parsers: whatever bytes an ethtool ioctl reply or a
recorded bundle entry holds, the parser returns a result or raises ParseError - nothing else.

Inputs: random bytes, the captured replies mutated (truncated, bytes flipped, inserted,
deleted), well-formed headers with random bodies (so the checks past the header run), and
random JSON-like structures for the recorded form."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropdoc.errors import ParseError
from dropdoc.sources import ethtool, link_stats

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
ETHTOOL = FIXTURES / "ethtool"
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

PARSERS = {
    "drvinfo": (ethtool.parse_drvinfo, ethtool.ETHTOOL_GDRVINFO),
    "sset_info": (ethtool.parse_sset_count, ethtool.ETHTOOL_GSSET_INFO),
    "strings": (ethtool.parse_strings, ethtool.ETHTOOL_GSTRINGS),
    "stats": (ethtool.parse_stats, ethtool.ETHTOOL_GSTATS),
    "ring": (ethtool.parse_ring, ethtool.ETHTOOL_GRINGPARAM),
    "channels": (ethtool.parse_channels, ethtool.ETHTOOL_GCHANNELS),
    "link": (ethtool.parse_link, ethtool.ETHTOOL_GLINK),
}
SEEDS = {part: [p.read_bytes() for p in sorted(ETHTOOL.glob(f"*/{part}.bin"))] for part in PARSERS}


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "count"]))
        pos = draw(st.integers(0, len(data)))
        if op == "truncate":
            del data[pos:]
        elif op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=40))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 40))]
        elif op == "count" and len(data) >= 12:  # the count fields of sset/gstrings/gstats
            offset = draw(st.sampled_from([4, 8]))
            data[offset:offset + 4] = struct.pack("=I", draw(st.sampled_from([0, 1, 2, 20, 10**6, 2**32 - 1])))
    return bytes(data)


def framed(cmd: int) -> st.SearchStrategy[bytes]:
    """The right command word, then anything."""
    return st.binary(max_size=400).map(lambda body: struct.pack("=I", cmd) + body)


@FUZZ
@given(data=st.data())
def test_reply_parsers_raise_only_parse_error(data):
    part = data.draw(st.sampled_from(list(PARSERS)), label="part")
    parser, cmd = PARSERS[part]
    raw = data.draw(st.one_of(st.binary(max_size=300), mutated(SEEDS[part]), framed(cmd)), label="raw")
    try:
        result = parser(raw)
    except ParseError:
        return
    if part == "strings":
        assert all(isinstance(name, str) for name in result)
    elif part == "stats":
        assert all(isinstance(v, int) and 0 <= v < 2**64 for v in result)
    elif part == "sset_info":
        assert result is None or 0 <= result < 2**32


RECORDS = [json.loads((ETHTOOL / name).read_text()) for name in ("recorded_host.json", "recorded_veth.json")]
HANDMADE = json.loads((ETHTOOL / "handmade.json").read_text())
SEED_RECORDS = [r for rec in RECORDS for r in rec["interfaces"].values()] + list(HANDMADE.values())
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=8), children, max_size=3), max_leaves=8)


@st.composite
def mutated_record(draw: st.DrawFn) -> dict:
    record = dict(draw(st.sampled_from(SEED_RECORDS)))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(list(PARSERS) + ["errors", "extra"]))
        how = draw(st.sampled_from(["drop", "swap", "garble", "value", "mutate"]))
        if how == "drop":
            record.pop(key, None)
        elif how == "swap":
            record[key] = draw(st.sampled_from(SEED_RECORDS)).get(draw(st.sampled_from(list(PARSERS))))
        elif how == "garble":
            record[key] = draw(st.text(alphabet="0123456789abcdefxyz ", max_size=60))
        elif how == "value":
            record[key] = draw(json_values)
        elif isinstance(record.get(key), str) and key in SEEDS:
            try:
                raw = bytes.fromhex(record[key])
            except ValueError:  # garbled by an earlier step
                continue
            record[key] = draw(mutated([raw])).hex()
    return record


@FUZZ
@given(record=st.one_of(mutated_record(), json_values))
def test_parse_record_raises_only_parse_error(record):
    try:
        nic = ethtool.parse_record(record)
    except ParseError:
        return
    assert isinstance(nic.driver, str) and all(isinstance(v, int) for v in nic.stats.values())
    assert all(isinstance(name, str) for name in ethtool.counters(ethtool.EthtoolData({"x": nic})))


@FUZZ
@given(recorded=st.one_of(
    json_values,
    st.builds(lambda interfaces, skipped: {"interfaces": interfaces, "skipped": skipped},
              st.dictionaries(st.text(max_size=8), st.one_of(mutated_record(), json_values), max_size=3),
              st.one_of(st.dictionaries(st.text(max_size=8), json_scalars, max_size=2), json_values)),
))
def test_parse_recording_raises_only_parse_error(recorded):
    try:
        data = ethtool.parse(recorded)
    except ParseError:
        return
    assert set(data.interfaces).isdisjoint(set(data.skipped) - set(recorded.get("skipped", {})))
    ethtool.counters(data)


def nl_message(msg_type: int, body: bytes) -> bytes:
    length = 16 + len(body)
    return (length.to_bytes(4, "little") + msg_type.to_bytes(2, "little") + bytes(10) + body).ljust(
        (length + 3) & ~3, b"\0")


def nl_attr(attr_type: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return (length.to_bytes(2, "little") + attr_type.to_bytes(2, "little") + payload).ljust((length + 3) & ~3, b"\0")


REPLY = (FIXTURES / "link_stats" / "rtm_getlink.bin").read_bytes()
carrier_inputs = st.one_of(
    st.binary(max_size=300),
    mutated([REPLY]),
    # RTM_NEWLINK with an ifinfomsg and random carrier-like attributes
    st.lists(st.tuples(st.sampled_from([3, 35, 47, 48, 23, 4]), st.binary(max_size=12)), max_size=5).map(
        lambda attrs: nl_message(16, bytes(16) + b"".join(nl_attr(t, p) for t, p in attrs))),
)


@FUZZ
@given(data=carrier_inputs)
def test_rtnl_carrier_raises_only_parse_error(data):
    try:
        links = link_stats.parse_rtnl_carrier(data)
    except ParseError:
        return
    except OSError as exc:  # documented: NLMSG_ERROR with a negative errno
        assert exc.errno is not None and 0 < exc.errno < 4096
        return
    assert all(set(t) <= set(link_stats.CARRIER_FILES) and all(0 <= v < 2**32 for v in t.values())
               for t in links.values())
