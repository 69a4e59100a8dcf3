"""Property tests for the link-layer parsers: whatever bytes an ethtool ioctl reply or a
recorded bundle entry holds, the parser returns a result or raises ParseError - nothing else.

Inputs: random bytes, the captured replies mutated (truncated, bytes flipped, inserted,
deleted), well-formed headers with random bodies (so the checks past the header run), and
random JSON-like structures for the recorded form."""

from __future__ import annotations

import json
import struct

from fuzzing import (FIXTURES, FUZZ, REFUSED, delete, fixture, insert, json_scalars, json_values, mutated,
                     nl_attr, nl_message, overwrite_u32, parse_or_refuse, set_byte, truncate)
from hypothesis import given
from hypothesis import strategies as st

from dropdoc.sources import ethtool, link_stats

ETHTOOL = FIXTURES / "ethtool"

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
# ioctl replies hold arrays (strings, stats): larger insertions and deletions than a
# text file's, and the count fields of sset/gstrings/gstats (at offset 4 or 8) made wrong
EDITS = (truncate, set_byte, insert(max_size=40), delete(max_size=40),
         overwrite_u32(offsets=(4, 8), values=(0, 1, 2, 20, 10**6, 2**32 - 1)))


def framed(cmd: int) -> st.SearchStrategy[bytes]:
    """The right command word, then anything."""
    return st.binary(max_size=400).map(lambda body: struct.pack("=I", cmd) + body)


@FUZZ
@given(data=st.data())
def test_reply_parsers_raise_only_parse_error(data):
    part = data.draw(st.sampled_from(list(PARSERS)), label="part")
    parser, cmd = PARSERS[part]
    raw = data.draw(st.one_of(st.binary(max_size=300), mutated(SEEDS[part], EDITS), framed(cmd)), label="raw")
    result = parse_or_refuse(parser, raw)
    if result is REFUSED:
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
            record[key] = draw(mutated([raw], EDITS)).hex()
    return record


@FUZZ
@given(record=st.one_of(mutated_record(), json_values))
def test_parse_record_raises_only_parse_error(record):
    nic = parse_or_refuse(ethtool.parse_record, record)
    if nic is not REFUSED:
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
    data = parse_or_refuse(ethtool.parse, recorded)
    if data is not REFUSED:
        assert set(data.interfaces).isdisjoint(set(data.skipped) - set(recorded.get("skipped", {})))
        ethtool.counters(data)


REPLY = fixture("link_stats/rtm_getlink.bin")
carrier_inputs = st.one_of(
    st.binary(max_size=300),
    mutated([REPLY], EDITS),
    # RTM_NEWLINK with an ifinfomsg and random carrier-like attributes
    st.lists(st.tuples(st.sampled_from([3, 35, 47, 48, 23, 4]), st.binary(max_size=12)), max_size=5).map(
        lambda attrs: nl_message(16, bytes(16) + b"".join(nl_attr(t, p) for t, p in attrs))),
)


@FUZZ
@given(data=carrier_inputs)
def test_rtnl_carrier_raises_only_parse_error(data):
    links = parse_or_refuse(link_stats.parse_rtnl_carrier, data, netlink=True)
    if links is not REFUSED:
        assert all(set(t) <= set(link_stats.CARRIER_FILES) and all(0 <= v < 2**32 for v in t.values())
                   for t in links.values())
