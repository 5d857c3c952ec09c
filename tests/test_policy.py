"""Where upstreams may be: MODELPORT_UPSTREAM_ALLOW lists networks and names; a name is
judged by the addresses it resolves to, unless only names are listed."""

from __future__ import annotations

import ipaddress

import pytest

from modelport.policy import ServerPolicy, UpstreamDenied


def test_a_name_is_judged_by_where_it_resolves_when_networks_are_allowed() -> None:
    policy = ServerPolicy(allow=("10.0.0.0/8",))
    policy.check_host("vllm.internal")  # written: allowed, for now
    policy.check_address(ipaddress.ip_address("10.1.2.3"), host="vllm.internal")  # resolved inside: allowed
    with pytest.raises(UpstreamDenied, match="not at an address allowed"):
        policy.check_address(ipaddress.ip_address("192.168.1.9"), host="vllm.internal")


def test_with_only_names_allowed_another_name_is_refused_as_written() -> None:
    policy = ServerPolicy(allow=("api.openai.com",))
    policy.check_host("api.openai.com")
    with pytest.raises(UpstreamDenied, match="not allowed on this server"):
        policy.check_host("elsewhere.example")
    with pytest.raises(UpstreamDenied):
        policy.check_address(ipaddress.ip_address("10.1.2.3"), host="elsewhere.example")
