"""Image costs: multipart upload vs base64 JSON for batches of 2-megapixel images, and the per-image cost of
the Pillow and TurboJPEG decode paths and of the backends' decode (whole, and reduced for the demo's processor).

    .venv/bin/python -m benchmarks.images [--images 1 8] [--runs 3] [--repeats 5] [--output FILE]

The upload comparison runs a real server on the demo models (written to a temporary folder) and sends the same
batch to `demo-vision-mlx` both ways with max_tokens 1, so the model's share is the same in both; the
difference is what the transport costs (base64 inflates by a third, is made and parsed out of JSON, and decoded).
Requests alternate between the two forms, one of each per repeat, so that other programs' load falls on both;
each run reports the median per image and the ratio base64 / multipart. The transport rows time the same
work without the server and the model: the client's encoding plus the server's parsing up to the image bytes.
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
from heylook_llm.backends.image_decode import ShortestEdge, decode_rgb
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
        # What the MLX vision backend does with the image before its processor: a full decode for a processor whose
        # sizing is not worked out, a 1/8 DCT decode for the demo model's CLIP processor (shortest edge 56).
        "backend_decode_full_ms": per_call_ms(lambda: decode_rgb(jpeg, None), repeats),
        "backend_decode_demo_clip_ms": per_call_ms(lambda: decode_rgb(jpeg, ShortestEdge(56)), repeats),
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


def _json_body(model: str, images: list[bytes]) -> bytes:
    # The client's own base64 encoding is part of what a JSON upload costs.
    parts = [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(i).decode()}}
        for i in images
    ]
    messages = [{"role": "user", "content": [*parts, {"type": "text", "text": "describe"}]}]
    return json.dumps({"model": model, "messages": messages, "max_tokens": 1, "temperature": 0}).encode()


def _multipart_request(base: str, model: str, images: list[bytes]) -> httpx.Request:
    parts = [{"type": "image_url", "image_url": {"url": "__RAW_IMAGE__"}} for _ in images]
    messages = [{"role": "user", "content": [*parts, {"type": "text", "text": "describe"}]}]
    form = {"model": model, "messages": json.dumps(messages), "max_tokens": "1", "temperature": "0"}
    files = [("images", (f"{n}.jpg", data, "image/jpeg")) for n, data in enumerate(images)]
    return httpx.Request("POST", f"{base}/v1/chat/completions/multipart", data=form, files=files)


def transport_costs(images: list[bytes], repeats: int) -> dict[str, float]:
    """Per image: the client's encoding and the server's parsing up to the image bytes, for each form (no server,
    no model)."""
    from heylook_llm.api.images.sources import decode_data_url
    from heylook_llm.api.openai.image_parts import form_boundary, image_refs, split_form
    from heylook_llm.api.openai.schemas import ChatCompletionRequest

    limits = ImageSettings()

    def json_path() -> None:
        # As FastAPI reads a JSON body: the standard library's json.loads, then the model validates the objects.
        body = ChatCompletionRequest.model_validate(json.loads(_json_body("m", images)))
        for ref in image_refs(body):
            decode_data_url(ref.url or "", ref.label, limits)

    def multipart_path() -> None:
        request = _multipart_request("http://host", "m", images)
        parts = split_form(request.read(), form_boundary(request.headers["content-type"]))
        for part in parts:
            if part.filename is not None:
                bytes(part.data)

    count = len(images)
    json_ms = per_call_ms(json_path, repeats) / count
    multipart_ms = per_call_ms(multipart_path, repeats) / count
    return {
        "json_base64_per_image_ms": json_ms,
        "multipart_per_image_ms": multipart_ms,
        "ratio": json_ms / multipart_ms,
    }


def upload_costs(images: list[bytes], repeats: int, port: int, model: str) -> dict[str, float]:
    base = f"http://127.0.0.1:{port}"
    json_payload = _json_body(model, images)
    with httpx.Client(timeout=300) as client:

        def send_json() -> float:
            started = time.perf_counter()
            body = _json_body(model, images)
            response = client.post(
                f"{base}/v1/chat/completions", content=body, headers={"content-type": "application/json"}
            )
            response.raise_for_status()
            return (time.perf_counter() - started) * 1000

        def send_multipart() -> float:
            started = time.perf_counter()
            client.send(_multipart_request(base, model, images)).raise_for_status()
            return (time.perf_counter() - started) * 1000

        send_json(), send_multipart()  # warm caches and lazy imports on both sides
        json_times: list[float] = []
        multipart_times: list[float] = []
        for repeat in range(repeats):
            # Alternate which goes first, so that neither always follows the other.
            if repeat % 2:
                multipart_times.append(send_multipart())
                json_times.append(send_json())
            else:
                json_times.append(send_json())
                multipart_times.append(send_multipart())
    count = len(images)
    json_ms = statistics.median(json_times) / count
    multipart_ms = statistics.median(multipart_times) / count
    return {
        "batch_images": count,
        "json_base64_per_image_ms": json_ms,
        "multipart_per_image_ms": multipart_ms,
        "ratio": json_ms / multipart_ms,
        "multipart_saves_per_image_ms": json_ms - multipart_ms,
        "json_body_bytes_per_image": len(json_payload) / count,
        "multipart_bytes_per_image": sum(len(i) for i in images) / count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[1, 8], help="images per request (one batch each)")
    parser.add_argument("--runs", type=int, default=3, help="runs of the upload comparison, side by side")
    parser.add_argument("--repeats", type=int, default=5, help="requests of each form per run and batch")
    parser.add_argument("--target", type=float, default=1.3, help="the ratio base64 / multipart to reach")
    parser.add_argument("--port", type=int, default=18631)
    parser.add_argument(
        "--model",
        choices=["demo-vision-mlx", "demo-vision-gguf"],
        default="demo-vision-mlx",
        help="the demo vision model the uploads go to (mlx-vlm, or llama.cpp with its projector)",
    )
    parser.add_argument("--skip-codec", action="store_true", help="leave out the decode and resize costs")
    parser.add_argument("--output", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    images = [photo_like(seed) for seed in range(max(args.images))]
    results: dict[str, Any] = {"image": f"{WIDTH}x{HEIGHT} JPEG q90, {len(images[0]) // 1024} KiB"}
    if not args.skip_codec:
        results["per_image"] = codec_costs(images[0], args.repeats * 4)
    results["transport"] = {str(n): transport_costs(images[:n], args.repeats * 4) for n in args.images}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [sys.executable, "-m", "heylook_llm", "demo-models", "--output", folder],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        server = _start_server(Path(folder) / "models.yaml", args.port)
        try:
            for _ in range(args.runs):
                runs.append(
                    {str(n): upload_costs(images[:n], args.repeats, args.port, args.model) for n in args.images}
                )
        finally:
            server.terminate()
            server.wait(timeout=30)
    results["upload_runs"] = runs
    text = json.dumps(results, indent=2)
    log.info("%s", text)
    log.info("per image, base64 JSON / multipart (median ms), target %.2fx:", args.target)
    for n in args.images:
        t = results["transport"][str(n)]
        log.info(
            "  transport only, %d images: %.2f / %.2f = %.2fx %s",
            n,
            t["json_base64_per_image_ms"],
            t["multipart_per_image_ms"],
            t["ratio"],
            "pass" if t["ratio"] >= args.target else "MISS",
        )
        for index, run in enumerate(runs, 1):
            u = run[str(n)]
            log.info(
                "  server run %d, %d images: %.1f / %.1f = %.2fx %s",
                index,
                n,
                u["json_base64_per_image_ms"],
                u["multipart_per_image_ms"],
                u["ratio"],
                "pass" if u["ratio"] >= args.target else "MISS",
            )
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
