"""What the property tests of dropdoc's parsers share (tests/unit/test_fuzz_*.py,
test_parsers_fuzz.py): the settings, mutations of real fixtures, framed netlink messages,
JSON-like values, and the one assertion they all make - bad input may only raise ParseError.

    @FUZZ
    @given(data=mutated(fixtures("qdisc", "rtm_getqdisc.bin"), BINARY_EDITS))
    def test_qdisc(data):
        qdiscs = parse_or_refuse(qdisc.parse_qdiscs, data, {}, netlink=True)
        if qdiscs is REFUSED:
            return
        ...                                  # sanity of what the parser accepted

Anything else escaping a parser (IndexError, ValueError, UnicodeError, struct.error,
OverflowError, RecursionError...) is a bug: read_source would report "FAILED: IndexError"
instead of naming the broken input.

A mutation is a seed (a captured fixture) with a few edits. An edit is a function
(draw, data: bytearray) -> bytearray; each test file picks the edits that fit its format:
BINARY_EDITS for any file, TEXT_EDITS (plus format tokens through text_edits()) for the
line-and-column files of /proc, and field overwrites (overwrite_u16/overwrite_u32) for
length and count fields of binary replies.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from dropdoc.errors import ParseError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

HEX = "0123456789abcdefABCDEF"
DIGITS = "0123456789"


def fixture(relpath: str) -> bytes:
    """tests/fixtures/<relpath> as bytes."""
    return (FIXTURES / relpath).read_bytes()


def fixtures(directory: str, *names: str) -> list[bytes]:
    """Several fixtures of one tests/fixtures/<directory>."""
    return [fixture(f"{directory}/{name}") for name in names]


def decode(data: bytes) -> str:
    """What errors.read_text does with the bytes of a kernel file."""
    return data.decode("utf-8", errors="replace")


# --- the one assertion: only ParseError may escape --------------------------------------------

class _Refused:
    def __repr__(self) -> str:
        return "REFUSED"


REFUSED: Any = _Refused()


def parse_or_refuse(parser: Callable[..., Any], *args: Any, netlink: bool = False,
                    also: tuple[type[BaseException], ...] = ()) -> Any:
    """parser(*args), or REFUSED when the parser refused the input with ParseError (or one
    of `also`). Any other exception propagates and fails the test.

    netlink=True: an OSError carrying a plausible errno also counts as a refusal - the one
    documented exception: netlink.messages raises OSError(errno) for an NLMSG_ERROR
    message with a negative errno, which dropdoc.netlink.dump translates at the boundary.
    """
    try:
        return parser(*args)
    except (ParseError, *also):
        return REFUSED
    except OSError as exc:
        if not netlink:
            raise
        assert exc.errno is not None and 0 < exc.errno < 4096, f"OSError without a valid errno: {exc!r}"
        return REFUSED


# --- edits of a seed --------------------------------------------------------------------------

Edit = Callable[[st.DrawFn, bytearray], bytearray]

# Separators and values that get a text parser past its first checks, and bytes that are
# not valid UTF-8 ("\xff\xfe") or are a digit to str.isdigit() but not to int() ("²").
TEXT_TOKENS = (b" ", b"\n", b"\r\n", b"\t", b":", b"|", b"_", b"-1", b"0x", b"\x00", b"\xff\xfe", b"\xc2\xb2")


def truncate(draw: st.DrawFn, data: bytearray) -> bytearray:
    """Cut the data at any offset (a read that stopped short)."""
    del data[draw(st.integers(0, len(data))):]
    return data


def set_byte(draw: st.DrawFn, data: bytearray) -> bytearray:
    """Replace one byte by any value."""
    if data:
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return data


def flip_bit(draw: st.DrawFn, data: bytearray) -> bytearray:
    """Flip one bit of one byte (a value off by a power of two, a flag set or cleared)."""
    if data:
        data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    return data


def insert(*tokens: bytes, max_size: int = 8) -> Edit:
    """An edit inserting 1..max_size random bytes, or one of `tokens`, anywhere."""
    chunk = st.binary(min_size=1, max_size=max_size)
    if tokens:
        chunk = chunk | st.sampled_from(tokens)

    def insert_bytes(draw: st.DrawFn, data: bytearray) -> bytearray:
        pos = draw(st.integers(0, len(data)))
        data[pos:pos] = draw(chunk)
        return data
    return insert_bytes


def delete(max_size: int = 16) -> Edit:
    """An edit deleting 1..max_size bytes anywhere."""
    def delete_bytes(draw: st.DrawFn, data: bytearray) -> bytearray:
        pos = draw(st.integers(0, len(data)))
        del data[pos:pos + draw(st.integers(1, max_size))]
        return data
    return delete_bytes


def shuffle_lines(draw: st.DrawFn, data: bytearray) -> bytearray:
    """Drop a line, duplicate one, or swap two (a header line repeated, rows reordered)."""
    lines = bytes(data).split(b"\n")
    i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
    how = draw(st.sampled_from(["drop", "dup", "swap"]))
    if how == "drop":
        del lines[i]
    elif how == "dup":
        lines.insert(i, lines[j])
    else:
        lines[i], lines[j] = lines[j], lines[i]
    return bytearray(b"\n".join(lines))


def swap_words_in_line(draw: st.DrawFn, data: bytearray) -> bytearray:
    """Swap two whitespace-separated words of one line (header columns reordered)."""
    lines = bytes(data).split(b"\n")
    i = draw(st.integers(0, len(lines) - 1))
    words = lines[i].split()
    if len(words) >= 2:
        a, b = draw(st.integers(0, len(words) - 1)), draw(st.integers(0, len(words) - 1))
        words[a], words[b] = words[b], words[a]
        lines[i] = b" ".join(words)
    return bytearray(b"\n".join(lines))


def swap_words(draw: st.DrawFn, data: bytearray) -> bytearray:
    """Swap two space-separated words anywhere in the data: also across lines, so rows
    get more or fewer columns than the header."""
    words = bytes(data).split(b" ")
    i, j = draw(st.integers(0, len(words) - 1)), draw(st.integers(0, len(words) - 1))
    words[i], words[j] = words[j], words[i]
    return bytearray(b" ".join(words))


def _overwrite(fmt: str, offsets: Sequence[int] | None, values: Sequence[int] | None) -> Edit:
    size = struct.calcsize(fmt)
    value = st.sampled_from(values) if values else st.integers(0, 2 ** (8 * size) - 1)

    def overwrite(draw: st.DrawFn, data: bytearray) -> bytearray:
        pos = draw(st.sampled_from(offsets) if offsets else st.integers(0, len(data)))
        if pos + size <= len(data):
            struct.pack_into(fmt, data, pos, draw(value))
        return data
    overwrite.__name__ = overwrite.__qualname__ = f"overwrite_{fmt}"
    return overwrite


def overwrite_u16(offsets: Sequence[int] | None = None, values: Sequence[int] | None = None) -> Edit:
    """An edit writing a little-endian u16 (any value, or one of `values`) at any offset
    (or one of `offsets`): a netlink attribute length or type made wrong."""
    return _overwrite("<H", offsets, values)


def overwrite_u32(offsets: Sequence[int] | None = None, values: Sequence[int] | None = None) -> Edit:
    """As overwrite_u16 for a u32: a message length, a count of entries."""
    return _overwrite("<I", offsets, values)


BINARY_EDITS: tuple[Edit, ...] = (truncate, set_byte, insert(), delete())


def text_edits(*tokens: bytes) -> tuple[Edit, ...]:
    """The edits for a text file: BINARY_EDITS, inserting also TEXT_TOKENS and the format's
    own `tokens`, plus line and word shuffles."""
    return (truncate, set_byte, insert(*TEXT_TOKENS, *tokens), delete(), shuffle_lines, swap_words_in_line)


TEXT_EDITS = text_edits()


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes], edits: Sequence[Edit] = BINARY_EDITS,
            min_edits: int = 0, max_edits: int = 4) -> bytes:
    """One of the seeds with min_edits..max_edits random edits taken from `edits`."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(min_edits, max_edits))):
        data = draw(st.sampled_from(edits))(draw, data)
    return bytes(data)


def text_inputs(seeds: Sequence[bytes], alphabet: str, *, edits: Sequence[Edit] = TEXT_EDITS,
                max_size: int = 300) -> st.SearchStrategy[str]:
    """Text for a /proc parser: any text, text from the format's own alphabet (gets past
    the first checks), and the seeds mutated."""
    return st.one_of(st.text(max_size=max_size), st.text(alphabet=alphabet, max_size=max_size + 100),
                     mutated(seeds, edits).map(decode))


def reassembled_lines(seed: str) -> st.SearchStrategy[str]:
    """A tool's output rebuilt from its own lines in any order and number, mixed with random
    lines, or cut at any offset."""
    lines = seed.splitlines(keepends=True)
    return (st.lists(st.sampled_from(lines) | st.text(max_size=30), max_size=len(lines) + 4).map("".join)
            | st.integers(0, len(seed)).map(lambda n: seed[:n]))


# --- netlink framing --------------------------------------------------------------------------

NLM_F_MULTI = 2


def _padded(data: bytes) -> bytes:
    return data.ljust((len(data) + 3) & ~3, b"\0")


def nl_message(msg_type: int, body: bytes, flags: int = NLM_F_MULTI, seq: int = 1) -> bytes:
    """One netlink message (struct nlmsghdr + body), padded to 4 bytes as in a dump."""
    return _padded(struct.pack("=IHHII", 16 + len(body), msg_type, flags, seq, 0) + body)


def nl_attr(attr_type: int, payload: bytes) -> bytes:
    """One netlink attribute (struct nlattr + payload), padded to 4 bytes."""
    return _padded(struct.pack("=HH", 4 + len(payload), attr_type) + payload)


def nl_messages(types: Sequence[int], body: st.SearchStrategy[bytes], max_size: int = 4
                ) -> st.SearchStrategy[bytes]:
    """A well-framed dump of up to max_size messages of the given types with random bodies:
    gets past the framing to the body parsers."""
    return st.lists(st.tuples(st.sampled_from(types), body), max_size=max_size).map(
        lambda msgs: b"".join(nl_message(t, b) for t, b in msgs))


# --- JSON-like values (recorded bundle entries, tool output, diagnoses) -----------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=12)
