"""Image costs: multipart upload vs base64 JSON for a batch of 2-megapixel images, and the per-image cost of
the Pillow and TurboJPEG decode paths.

    .venv/bin/python -m benchmarks.images [--images 8] [--repeats 5] [--output benchmarks/results/images.json]

The upload comparison runs a real server on the demo models (written to a temporary folder) and sends the same
batch to `demo-vision-mlx` both ways with max_tokens 1, so the model's share is the same in both; the
difference is what the transport costs (base64 inflates by a third and is parsed out of JSON).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from heylook_llm.api.images import ResizeOptions, process_image
from heylook_llm.api.images.codec import load_turbojpeg
from heylook_llm.config.settings import ImageSettings

log = logging.getLogger("benchmarks.images")
WIDTH, HEIGHT = 1632, 1224  # 2.0 megapixels, a phone photo's 4:3


def photo_like(seed: int) -> bytes:
    """A JPEG (quality 90) with smooth regions and noise, compressing about as a photo does."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([(x * 255 // WIDTH), (y * 255 // HEIGHT), ((x + y) * 127 // (WIDTH + HEIGHT))], axis=-1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def per_call_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm caches and lazy imports
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def codec_costs(jpeg: bytes, repeats: int) -> dict[str, float]:
    turbo = load_turbojpeg()
    limits = ImageSettings()

    def pillow_decode() -> None:
        with Image.open(io.BytesIO(jpeg)) as image:
            image.load()

    results = {
        "pillow_decode_ms": per_call_ms(pillow_decode, repeats),
        "pillow_pipeline_resize1024_ms": per_call_ms(
            lambda: process_image(jpeg, "bench", ResizeOptions(max_side=1024), limits, None), repeats
        ),
        "pillow_pipeline_reencode_q85_ms": per_call_ms(
            lambda: process_image(jpeg, "bench", ResizeOptions(quality=85), limits, None), repeats
        ),
        "pipeline_passthrough_ms": per_call_ms(lambda: process_image(jpeg, "bench", ResizeOptions(), limits), repeats),
    }
    if turbo is not None:
        from turbojpeg import TJPF_RGB

        results["turbojpeg_decode_ms"] = per_call_ms(lambda: turbo.decode(jpeg, pixel_format=TJPF_RGB), repeats)
        results["turbojpeg_pipeline_resize1024_ms"] = per_call_ms(
            lambda: process_image(jpeg, "bench", ResizeOptions(max_side=1024), limits, turbo), repeats
        )
        results["turbojpeg_pipeline_reencode_q85_ms"] = per_call_ms(
            lambda: process_image(jpeg, "bench", ResizeOptions(quality=85), limits, turbo), repeats
        )
    else:
        log.warning("TurboJPEG is not available (PyTurboJPEG or libturbojpeg missing); its rows are left out")
    return results


def _start_server(config: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "heylook_llm", "--config", str(config), "--port", str(port), "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start")


def upload_costs(images: list[bytes], repeats: int, port: int) -> dict[str, float]:
    model = "demo-vision-mlx"
    parts = [{"type": "image_url", "image_url": {"url": "__RAW_IMAGE__"}} for _ in images]
    messages = [{"role": "user", "content": [*parts, {"type": "text", "text": "describe"}]}]
    json_messages = [
        {
            "role": "user",
            "content": [
                *[
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(i).decode()},
                    }
                    for i in images
                ],
                {"type": "text", "text": "describe"},
            ],
        }
    ]
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=300) as client:

        def send_json() -> None:
            # The client's own base64 encoding is part of what a JSON upload costs.
            body = {"model": model, "messages": json_messages, "max_tokens": 1, "temperature": 0}
            payload = json.dumps(body).encode()
            response = client.post(
                f"{base}/v1/chat/completions", content=payload, headers={"content-type": "application/json"}
            )
            response.raise_for_status()

        def send_multipart() -> None:
            form: dict[str, Any] = {
                "model": model,
                "messages": json.dumps(messages),
                "max_tokens": "1",
                "temperature": "0",
            }
            files = [("images", (f"{n}.jpg", data, "image/jpeg")) for n, data in enumerate(images)]
            client.post(f"{base}/v1/chat/completions/multipart", data=form, files=files).raise_for_status()

        json_ms = per_call_ms(send_json, repeats)
        multipart_ms = per_call_ms(send_multipart, repeats)
    count = len(images)
    return {
        "batch_images": count,
        "json_base64_batch_ms": json_ms,
        "multipart_batch_ms": multipart_ms,
        "json_base64_per_image_ms": json_ms / count,
        "multipart_per_image_ms": multipart_ms / count,
        "multipart_saves_per_image_ms": (json_ms - multipart_ms) / count,
        "json_body_bytes_per_image": sum(len(base64.b64encode(i)) for i in images) / count,
        "multipart_bytes_per_image": sum(len(i) for i in images) / count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8, help="images per request in the upload comparison")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--port", type=int, default=18631)
    parser.add_argument("--output", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    images = [photo_like(seed) for seed in range(args.images)]
    results: dict[str, Any] = {"image": f"{WIDTH}x{HEIGHT} JPEG q90, {len(images[0]) // 1024} KiB"}
    results["per_image"] = codec_costs(images[0], args.repeats * 4)
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "heylook_llm", "demo-models", "--output", folder], check=True)
        server = _start_server(Path(folder) / "models.yaml", args.port)
        try:
            results["upload"] = upload_costs(images, args.repeats, args.port)
        finally:
            server.terminate()
            server.wait(timeout=30)
    text = json.dumps(results, indent=2)
    log.info("%s", text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
