"""GIVEN real sample images on a loopback origin, WHEN the handler runs, THEN each is stored with
the served bytes and the right Content-Type and metadata."""
from __future__ import annotations

import pytest
from conftest import SAMPLES, keys_in, sha256, stored

SAMPLE_TYPES = {
    "sunset.jpg": "image/jpeg",
    "diagram.png": "image/png",
    "icon.gif": "image/gif",
    "product.webp": "image/webp",
    "banner.avif": "image/avif",
    "logo.svg": "image/svg+xml",
    "poster-large.jpg": "image/jpeg",
}


@pytest.mark.parametrize("declared", ["right", "octet-stream", "missing"])
def test_mixed_batch_of_real_images(invoke, s3, bucket, httpserver, declared):
    # GIVEN every sample served with the right, a generic, or no Content-Type
    urls = []
    for name, mime in SAMPLE_TYPES.items():
        headers = {"right": {"Content-Type": mime},
                   "octet-stream": {"Content-Type": "application/octet-stream"},
                   "missing": {}}[declared]
        httpserver.expect_request(f"/img/{name}").respond_with_data(
            (SAMPLES / name).read_bytes(), headers=headers, content_type=None)
        urls.append(httpserver.url_for(f"/img/{name}"))
    # WHEN
    response = invoke({"urls": urls, "bucket": bucket, "prefix": "images/"})
    # THEN every image is stored, byte for byte, with its type and source URL
    assert response["failed"] == [] and response["remaining"] == []
    by_url = {r["url"]: r for r in response["succeeded"]}
    for url, (name, mime) in zip(urls, SAMPLE_TYPES.items()):
        data, obj = stored(s3, bucket, by_url[url]["key"])
        assert sha256(data) == sha256((SAMPLES / name).read_bytes())
        assert obj["ContentType"] == mime == by_url[url]["content_type"]
        assert obj["Metadata"]["source-url"] == url
        assert by_url[url]["bytes"] == len(data)
        assert by_url[url]["key"].startswith("images/localhost_")
    assert keys_in(s3, bucket) == {r["key"] for r in response["succeeded"]}


def test_explicit_key_goes_under_the_prefix(invoke, s3, bucket, httpserver):
    httpserver.expect_request("/p.png").respond_with_data((SAMPLES / "diagram.png").read_bytes(),
                                                          content_type="image/png")
    event = {"urls": [{"url": httpserver.url_for("/p.png"), "key": "custom/p.png"}],
             "bucket": bucket, "prefix": "images/"}
    response = invoke(event)
    assert [r["key"] for r in response["succeeded"]] == ["images/custom/p.png"]
    assert keys_in(s3, bucket) == {"images/custom/p.png"}
