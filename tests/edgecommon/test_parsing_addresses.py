"""One HOST:PORT syntax for every address flag: listen addresses may omit the host and take port 0."""

from __future__ import annotations

import pytest

from agent.main import parse_args as agent_args
from edgecommon.addresses import Address, AddressError, check_dial_target, grpc_listen_target, parse_address
from edgecommon.usage import UsageError
from manager.main import parse_args as manager_args


@pytest.mark.parametrize("text, address", [
    (":8080", Address("", 8080)), ("127.0.0.1:0", Address("127.0.0.1", 0)), ("[::1]:9090", Address("::1", 9090)),
    ("localhost:50051", Address("localhost", 50051)), ("0.0.0.0:65535", Address("0.0.0.0", 65535)),
])
def test_listen_addresses(text, address):
    assert parse_address(text, listen=True) == address


@pytest.mark.parametrize("text", ["nowhere", "8080", "host:99999", "host:", "::1:80", "a b:1", "[::1]", "host:port"])
def test_what_is_not_an_address_is_named(text):
    with pytest.raises(AddressError, match="not an address"):
        parse_address(text, listen=True)


@pytest.mark.parametrize("text", [":50051", "host:0"])
def test_an_address_to_dial_needs_a_host_and_a_port(text):
    with pytest.raises(AddressError):
        parse_address(text, listen=False)


def test_grpc_schemes_are_dialed_as_given():
    assert check_dial_target("unix:/run/edge.sock") == "unix:/run/edge.sock"
    assert check_dial_target("[::1]:3") == "[::1]:3"


def test_an_address_prints_as_it_parses():
    assert [str(parse_address(t, listen=True)) for t in (":80", "[::1]:80", "h:1")] == [":80", "[::1]:80", "h:1"]
    assert Address("", 80).bind_host() == "0.0.0.0"


def test_colon_port_means_every_interface_for_grpc():
    assert grpc_listen_target(":50051") == "[::]:50051"
    assert grpc_listen_target("127.0.0.1:0") == "127.0.0.1:0"


@pytest.mark.parametrize("text", [":9478", "127.0.0.1:0", "[::1]:8080"])
def test_both_daemons_read_metrics_addr_alike(text):
    expected = parse_address(text, listen=True)
    assert agent_args(["--insecure", "--metrics-addr", text]).metrics_addr == expected
    assert manager_args(["--insecure", "--metrics-addr", text]).metrics_addr == expected


@pytest.mark.parametrize("parse", [agent_args, manager_args])
def test_both_daemons_refuse_a_bad_metrics_addr_alike(parse):
    with pytest.raises(UsageError, match=r"^--metrics-addr: not an address: 'nowhere'"):
        parse(["--insecure", "--metrics-addr", "nowhere"])
