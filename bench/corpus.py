"""The small-image corpus: photo-like JPEG, PNG and WebP files of 20-300 KB made with Pillow.

Built once into bench/.cache/images (with manifest.json) and reused while the generator version
and the requested count still match. Every image comes from its own seed, so a rebuild gives the
same files. Sizes are spread log-uniformly over the range: each image gets a target size, and its
pixel dimensions are rescaled until the encoded file lands near it.
"""
from __future__ import annotations

import io
import json
import math
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

VERSION = 2
MIN_BYTES, MAX_BYTES = 20_000, 300_000
FORMATS = (("jpg", "JPEG", 0.6), ("webp", "WEBP", 0.2), ("png", "PNG", 0.2))


def _scene(seed: int, width: int, height: int) -> Image.Image:
    """A blurred landscape of gradients and shapes with sensor-like grain: compresses like a photo."""
    rng = random.Random(seed)

    def colour(alpha: int | None = None) -> tuple:
        c = tuple(rng.randint(0, 255) for _ in range(3))
        return c + (alpha,) if alpha is not None else c

    sky = Image.linear_gradient("L").resize((width, height))
    img = Image.composite(Image.new("RGB", (width, height), colour()),
                          Image.new("RGB", (width, height), colour()), sky)
    draw = ImageDraw.Draw(img, "RGBA")
    for _ in range(rng.randint(10, 45)):
        x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        x1, y1 = x0 + rng.uniform(0.05, 0.6) * width, y0 + rng.uniform(0.05, 0.6) * height
        kind = rng.random()
        if kind < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour(rng.randint(60, 220)))
        elif kind < 0.8:
            draw.rectangle((x0, y0, x1, y1), fill=colour(rng.randint(60, 220)))
        else:
            pts = [(rng.uniform(0, width), rng.uniform(0, height)) for _ in range(rng.randint(3, 6))]
            draw.polygon(pts, fill=colour(rng.randint(60, 220)))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 5.0)))
    draw = ImageDraw.Draw(img, "RGBA")  # a few sharp details in front of the blur
    for _ in range(rng.randint(3, 15)):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        draw.line((x0, y0, x0 + rng.uniform(-0.3, 0.3) * width, y0 + rng.uniform(-0.3, 0.3) * height),
                  fill=colour(200), width=rng.randint(1, 4))
    grain = Image.effect_noise((width, height), rng.uniform(8, 40)).convert("RGB")
    return Image.blend(img, grain, rng.uniform(0.04, 0.16))


def _encode(img: Image.Image, fmt: str, quality: int) -> bytes:
    out = io.BytesIO()
    if fmt == "PNG":
        img.save(out, fmt, optimize=False, compress_level=6)
    else:
        img.save(out, fmt, quality=quality, **({"method": 1} if fmt == "WEBP" else {}))
    return out.getvalue()


def make_image(index: int) -> tuple[str, bytes]:
    rng = random.Random(1_000_003 * index + VERSION)
    roll, acc = rng.random(), 0.0
    for ext, fmt, share in FORMATS:
        acc += share
        if roll <= acc:
            break
    target = math.exp(rng.uniform(math.log(MIN_BYTES * 1.1), math.log(MAX_BYTES * 0.93)))
    quality = rng.randint(68, 92)
    aspect = rng.choice((4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3))
    pixels = target / {"JPEG": 0.3, "WEBP": 0.07, "PNG": 1.6}[fmt]
    data = b""
    for _ in range(6):
        width = max(64, int(math.sqrt(pixels * aspect)))
        height = max(64, int(width / aspect))
        data = _encode(_scene(index, width, height), fmt, quality)
        if abs(len(data) - target) / target < 0.12 and MIN_BYTES <= len(data) <= MAX_BYTES:
            break
        pixels *= (target / len(data)) ** 1.15
    if not MIN_BYTES <= len(data) <= MAX_BYTES:  # last resort: trade quality for size
        for q in (60, 50, 40, 95):
            candidate = _encode(_scene(index, width, height), fmt, q)
            if MIN_BYTES <= len(candidate) <= MAX_BYTES:
                data = candidate
                break
    return f"{index:04d}.{ext}", data


def ensure_corpus(cache: Path, count: int, say=print) -> dict:
    """Return the manifest of at least `count` images in `cache`, generating what is missing."""
    manifest_path = cache / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("version") == VERSION and len(manifest["images"]) >= count and all(
                (cache / e["name"]).exists() for e in manifest["images"][:count]):
            return manifest
    cache.mkdir(parents=True, exist_ok=True)
    say(f"generating {count} images into {cache} (once; cached afterwards) ...")
    images = []
    with ProcessPoolExecutor(max_workers=2) as pool:
        for name, data in pool.map(make_image, range(count), chunksize=8):
            (cache / name).write_bytes(data)
            images.append({"name": name, "bytes": len(data)})
    manifest = {"version": VERSION, "images": images}
    manifest_path.write_text(json.dumps(manifest, indent=0))
    sizes = sorted(e["bytes"] for e in images)
    say(f"  {len(images)} images, {sum(sizes) / 1e6:.1f} MB, sizes {sizes[0] / 1e3:.0f}-"
        f"{sizes[-1] / 1e3:.0f} KB, median {sizes[len(sizes) // 2] / 1e3:.0f} KB")
    return manifest


if __name__ == "__main__":
    import sys
    ensure_corpus(Path(__file__).resolve().parent / ".cache" / "images", int(sys.argv[1]) if len(sys.argv) > 1 else 500)
