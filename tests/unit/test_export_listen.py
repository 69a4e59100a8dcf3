"""Where `dropdoc serve` may listen: loopback unless --allow-remote, refused in one line."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from dropdoc.cli import main
from dropdoc.export.http import ListenRefused, is_loopback, parse_listen, split_listen


@pytest.mark.parametrize("text, family, host, port", [
    ("127.0.0.1:9877", socket.AF_INET, "127.0.0.1", 9877),
    ("127.0.0.53:0", socket.AF_INET, "127.0.0.53", 0),
    ("localhost:9877", socket.AF_INET, "127.0.0.1", 9877),
    ("[::1]:9877", socket.AF_INET6, "::1", 9877),
    ("[::ffff:127.0.0.1]:9877", socket.AF_INET6, "::ffff:7f00:1", 9877),
])
def test_loopback_addresses_are_accepted(text, family, host, port):
    address = parse_listen(text)
    assert (address.family, address.host, address.port) == (family, host, port)


@pytest.mark.parametrize("text", ["0.0.0.0:9877", ":9877", "*:9877", "[::]:9877", "192.0.2.10:9877",
                                  "[2001:db8::1]:9877", "10.0.0.1:80"])
def test_non_loopback_is_refused_unless_allowed(text):
    with pytest.raises(ListenRefused, match="--allow-remote"):
        parse_listen(text)
    assert not is_loopback(parse_listen(text, allow_remote=True).host)


@pytest.mark.parametrize("text", ["9877", "127.0.0.1", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:65536",
                                  "::1:9877", "[::1]9877", "[::1", "127.0.0.1:-1", "127.0.0.1:١٢"])
def test_malformed_listen_is_a_clear_error(text):
    with pytest.raises(ListenRefused, match="--listen"):
        split_listen(text)


def test_cli_refuses_to_bind_every_address_in_one_line():
    result = CliRunner().invoke(main, ["serve", "--listen", "0.0.0.0:9877"])
    assert result.exit_code == 3
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dropdoc: --listen 0.0.0.0:9877")
    assert "--allow-remote" in lines[0] and "Traceback" not in result.output


def test_cli_unknown_namespace_is_one_line():
    result = CliRunner().invoke(main, ["serve", "--listen", "127.0.0.1:0", "--netns", "no-such-ns-dropdoc"])
    assert result.exit_code == 3
    assert result.output.strip().startswith("dropdoc: no network namespace named 'no-such-ns-dropdoc'")
