"""Drop locations: addresses -> symbol+offset from /proc/kallsyms."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropdoc.errors import ParseError
from dropdoc.trace import kallsyms

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "trace"


def test_captured_excerpt_resolves_return_addresses():
    symbols = kallsyms.parse((FIXTURES / "kallsyms_excerpt_6.18").read_text())
    assert symbols.usable
    assert symbols.resolve(0xFFFFFFFF82048C10 + 0x4BC) == "__udp4_lib_rcv+0x4bc"
    assert symbols.resolve(0xFFFFFFFF81F653D0) == "nft_do_chain+0x0"
    assert symbols.resolve(0x1000) == "0x1000"  # below every symbol
    assert symbols.resolve(0) == "?"
    assert symbols.resolve(0xFFFFFFFF82048C10 + (2 << 20)) == hex(0xFFFFFFFF82048C10 + (2 << 20))


def test_nonroot_view_has_no_addresses():
    symbols = kallsyms.parse((FIXTURES / "kallsyms_nonroot_6.18").read_text())
    assert not symbols.usable
    assert symbols.resolve(0xFFFFFFFF82048CCC) == "0xffffffff82048ccc"


def test_module_symbols_and_data_symbols():
    text = ("ffffffffc0203000 t nft_counter_eval\t[nf_tables]\n"
            "ffffffffc0100000 d some_data\t[nf_tables]\n"
            "ffffffff81000000 T _stext\n")
    symbols = kallsyms.parse(text)
    assert symbols.resolve(0xFFFFFFFFC0203010) == "nft_counter_eval+0x10 [nf_tables]"
    # data symbols are not locations; the nearest text symbol is too far away to own it
    assert symbols.resolve(0xFFFFFFFFC0100004) == "0xffffffffc0100004"
    assert "some_data" not in symbols.names


@pytest.mark.parametrize("text", ["", "not kallsyms\n", "zzzz T name\n", "ffff TT name\n"])
def test_broken(text):
    with pytest.raises(ParseError):
        kallsyms.parse(text)
