"""One DNS-1123 label and subdomain check (apimachinery's), used by both daemons."""

from __future__ import annotations

import pytest

from agent.main import parse_args as agent_args
from edgecommon.names import is_dns1123_label, is_dns1123_subdomain
from edgecommon.usage import UsageError
from manager.identity import node_name_problem
from manager.main import parse_args as manager_args


@pytest.mark.parametrize("name", ["a", "edge01", "a-b", "0", "x" * 63])
def test_labels(name):
    assert is_dns1123_label(name) and is_dns1123_subdomain(name)


@pytest.mark.parametrize("name", ["", "-a", "a-", "A", "a_b", "a.b", "x" * 64, "a\n", "é"])
def test_not_labels(name):
    assert not is_dns1123_label(name)


@pytest.mark.parametrize("name", ["edge01.example.com", "a.b.c", ".".join(["x" * 63] * 3) + ".abc"])
def test_subdomains(name):
    assert is_dns1123_subdomain(name)


@pytest.mark.parametrize("name", ["", "a..b", ".a", "a.", "A.b", "a_b.c", "x" * 254, "a\n"])
def test_not_subdomains(name):
    assert not is_dns1123_subdomain(name)


def test_the_agent_the_certificate_check_and_the_namespace_flag_agree():
    assert agent_args(["--insecure", "--node-name", "edge01.site"]).node_name == "edge01.site"
    assert node_name_problem("edge01.site") is None and node_name_problem("edge_01") is not None
    with pytest.raises(UsageError, match="--node-name"):
        agent_args(["--insecure", "--node-name", "edge_01"])
    assert manager_args(["--insecure", "--namespace", "team-a"]).kube.namespace == "team-a"
    with pytest.raises(UsageError, match="--namespace"):
        manager_args(["--insecure", "--namespace", "team.a"])  # a namespace is a label, not a subdomain
