"""SSRF and scheme protections. Each blocked case asserts that no connection reached any origin."""
from __future__ import annotations

import ipaddress

import pytest
from conftest import SAMPLES, keys_in
from origin import OriginOptions, address_problem
from origins import RawOrigin


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.255.254", "10.0.0.1", "172.16.5.4", "192.168.1.1",
    "169.254.169.254",            # instance metadata
    "169.254.170.2",              # the container credentials endpoint
    "100.64.0.1",                 # carrier-grade NAT
    "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.2.1",
    "198.18.0.1",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254",   # IPv4-mapped
    "2002:7f00:1::", "2002:a9fe:a9fe::",            # 6to4 around 127.0.0.1 / 169.254.169.254
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",        # NAT64 around the same
    "64:ff9b:1::a00:1",                             # local-use NAT64
])
def test_non_public_addresses_are_refused(address):
    assert address_problem(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "64:ff9b::808:808",
                                     "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert address_problem(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("allowed, host, ok", [
    (("cdn.example.com",), "cdn.example.com", True),
    (("cdn.example.com",), "CDN.example.com.", True),
    (("cdn.example.com",), "evil-cdn.example.com", False),
    (("*.example.com",), "a.b.example.com", True),
    (("*.example.com",), "example.com", False),
    (("*.example.com",), "example.com.evil.org", False),
    ((), "anything.org", True),
])
def test_host_allow_list(allowed, host, ok):
    assert OriginOptions(allowed_hosts=allowed).host_allowed(host) is ok


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/ok", "http://localhost:{port}/ok", "http://127.1:{port}/ok",
    "http://2130706433:{port}/ok", "http://0x7f.1:{port}/ok", "http://0177.0.0.1:{port}/ok",
    "http://[::ffff:127.0.0.1]:{port}/ok", "HTTP://LOCALHOST:{port}/ok",
    "http://127.0.0.1:9001/2018-06-01/runtime/invocation/next",  # the Lambda runtime API
    "http://169.254.170.2/v2/credentials", "http://169.254.169.254/latest/meta-data/",
    "file:///proc/self/environ", "FiLe:///etc/passwd", "ftp://127.0.0.1:{port}/ok",
    "gopher://127.0.0.1:{port}/_GET", "dict://127.0.0.1:{port}/", "jar:http://x.org/a!/b",
    " javascript:alert(1)",
])
def test_blocked_urls_make_no_connection(invoke, monkeypatch, s3, bucket, raw_origin, url):
    monkeypatch.delenv("ALLOW_PRIVATE_NETWORKS")
    target = url.format(port=raw_origin.port)
    response = invoke({"urls": [target], "bucket": bucket})
    [failed] = response["failed"]
    assert failed["retryable"] is False
    assert "not allowed" in failed["error"]
    assert raw_origin.connections == 0 and keys_in(s3, bucket) == set()
    assert "testing" not in str(response)  # nothing of the function's credentials is echoed


def test_redirect_to_blocked_address_is_refused_at_that_hop(invoke, monkeypatch, bucket, raw_origin):
    # GIVEN 127.0.0.1 allowed by network, and a second origin on 127.0.0.2 that is not
    inner = RawOrigin(host="127.0.0.2").start()
    try:
        monkeypatch.setenv("ALLOW_PRIVATE_NETWORKS", "127.0.0.1/32")
        to = f"http://127.0.0.2:{inner.port}/ok"
        url = raw_origin.url(f"/redirect?to={to}")
        # WHEN
        response = invoke({"urls": [url], "bucket": bucket})
        # THEN the first hop was fetched, the second refused before connecting
        [failed] = response["failed"]
        assert "127.0.0.2" in failed["error"] and "not allowed" in failed["error"]
        assert raw_origin.connections == 1 and inner.connections == 0
    finally:
        inner.stop()


def test_redirect_to_other_scheme_is_refused(invoke, bucket, raw_origin):
    response = invoke({"urls": [raw_origin.url("/redirect?to=file:///etc/passwd")], "bucket": bucket})
    assert "scheme 'file' is not allowed" in response["failed"][0]["error"]


def test_allowed_hosts_narrows_every_hop(invoke, monkeypatch, bucket, raw_origin):
    monkeypatch.setenv("ALLOWED_HOSTS", "127.0.0.1")
    ok = raw_origin.url("/ok?size=500")
    hop = raw_origin.url(f"/redirect?to=http://localhost:{raw_origin.port}/ok")
    response = invoke({"urls": [ok, hop], "bucket": bucket})
    assert [r["url"] for r in response["succeeded"]] == [ok]
    assert "host localhost is not in ALLOWED_HOSTS" in response["failed"][0]["error"]


def test_proxy_environment_variables_are_ignored(invoke, monkeypatch, s3, bucket, httpserver):
    # GIVEN a "proxy" that would see any request sent through it
    trap = RawOrigin().start()
    try:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{trap.port}")
        monkeypatch.setenv("NO_PROXY", "")
        httpserver.expect_request("/a.png").respond_with_data((SAMPLES / "diagram.png").read_bytes(),
                                                              content_type="image/png")
        response = invoke({"urls": [httpserver.url_for("/a.png")], "bucket": bucket})
        assert len(response["succeeded"]) == 1 and trap.connections == 0
    finally:
        trap.stop()
