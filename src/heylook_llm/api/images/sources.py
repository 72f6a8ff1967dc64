"""Image bytes from where requests point: data URLs, bare base64 (Ollama), uploads, and http(s) URLs.

Remote URLs are fetched with limits: http(s) only, a size cap, a timeout over the whole download, a bounded
number of redirects, and every hop's host resolved and refused when it is loopback, private, link-local or
otherwise not public (unless `allow_private_urls`). The connection then goes to the address that was checked
(the host name travels in the Host header and TLS SNI), so a DNS answer that changes between the check and
the connection cannot point the server at its own network. Nothing here reads local files.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from dataclasses import dataclass

import httpx

from heylook_llm.config.settings import ImageSettings
from heylook_llm.errors import InvalidRequest, LimitExceeded

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class ImageRef:
    """One image of a request as it arrived, with `label` naming it in errors ("messages[0].content[1]")."""

    label: str
    url: str | None = None
    """A data URL or an http(s) URL."""
    base64_data: str | None = None
    """Ollama's bare base64 (a data URL is accepted there too)."""
    data: bytes | memoryview | None = None
    """Uploaded bytes (multipart: a view into the request body)."""


def _too_large(label: str, size: int, limits: ImageSettings) -> LimitExceeded:
    return LimitExceeded(
        f"{label} is {size} bytes or more; the limit is max_image_bytes={limits.max_image_bytes}", param=label
    )


def decode_base64(text: str, label: str, limits: ImageSettings) -> bytes:
    # Three bytes per four characters: refuse oversize data before decoding it.
    if len(text) * 3 // 4 > limits.max_image_bytes + 3:
        raise _too_large(label, len(text) * 3 // 4, limits)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    # Clients wrap base64 in lines or use the URL-safe alphabet; accept both, refuse anything else.
    cleaned = "".join(text.split()).replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"{label} is not valid base64: {exc}", param=label) from exc


def decode_data_url(url: str, label: str, limits: ImageSettings) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma:
        raise InvalidRequest(f"{label}: a data URL needs a comma before its data", param=label)
    media = header[len("data:") :].split(";")
    mime = media[0].strip().lower()
    if mime and not mime.startswith("image/"):
        raise InvalidRequest(f"{label}: the data URL holds {mime}, not an image", param=label)
    if "base64" not in [m.strip().lower() for m in media[1:]]:
        raise InvalidRequest(f"{label}: only base64 data URLs are accepted (data:image/png;base64,...)", param=label)
    return decode_base64(payload, label, limits)


def _address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def _checked_address(url: httpx.URL, label: str, limits: ImageSettings) -> str:
    """The address to connect to for `url`, after refusing non-public targets (unless allowed)."""
    if url.scheme not in ("http", "https"):
        raise InvalidRequest(
            f"{label}: only http(s) and data: image URLs are accepted, not {url.scheme or 'a local path'}",
            param=label,
        )
    host = url.host
    if not host:
        raise InvalidRequest(f"{label}: the image URL has no host", param=label)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InvalidRequest(f"{label}: cannot resolve the image host '{host}': {exc}", param=label) from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise InvalidRequest(f"{label}: the image host '{host}' has no address", param=label)
    if not limits.allow_private_urls:
        refused = [a for a in addresses if not _address_allowed(a)]
        if refused:
            raise InvalidRequest(
                f"{label}: the image URL's host '{host}' resolves to {refused[0]}, a loopback, private or "
                "link-local address; such URLs are refused (allow_private_urls is off)",
                param=label,
            )
    return addresses[0]


async def _download(client: httpx.AsyncClient, start: httpx.URL, label: str, limits: ImageSettings) -> bytes:
    url = start
    for _ in range(limits.max_redirects + 1):
        address = await _checked_address(url, label, limits)
        pinned = url.copy_with(host=address)
        headers = {"Host": url.netloc.decode("ascii"), "Accept": "image/*"}
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        request = client.build_request("GET", pinned, headers=headers, extensions=extensions)
        response = await client.send(request, stream=True)
        try:
            if response.status_code in _REDIRECTS and "location" in response.headers:
                url = url.join(response.headers["location"])
                continue
            if response.status_code != 200:
                raise InvalidRequest(
                    f"{label}: fetching the image URL answered HTTP {response.status_code}", param=label
                )
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limits.max_image_bytes:
                raise _too_large(label, int(declared), limits)
            body = bytearray()
            async for piece in response.aiter_bytes():
                body += piece
                if len(body) > limits.max_image_bytes:
                    raise _too_large(label, len(body), limits)
            return bytes(body)
        finally:
            await response.aclose()
    raise InvalidRequest(
        f"{label}: the image URL redirected more than max_redirects={limits.max_redirects} times", param=label
    )


async def fetch_url(url: str, label: str, limits: ImageSettings) -> bytes:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidRequest(f"{label}: not a valid URL: {exc}", param=label) from exc
    timeout = limits.fetch_timeout_seconds
    try:
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(follow_redirects=False, timeout=timeout, trust_env=False) as client,
        ):
            return await _download(client, parsed, label, limits)
    except TimeoutError as exc:
        raise InvalidRequest(f"{label}: fetching the image URL took longer than {timeout:g}s", param=label) from exc
    except httpx.HTTPError as exc:
        raise InvalidRequest(f"{label}: fetching the image URL failed: {exc}", param=label) from exc


async def read_ref(ref: ImageRef, limits: ImageSettings) -> bytes:
    """The encoded bytes of one image reference."""
    if ref.data is not None:
        # The one copy of an upload: the image leaves the request body as the bytes the backends take.
        return ref.data if isinstance(ref.data, bytes) else bytes(ref.data)
    if ref.base64_data is not None:
        text = ref.base64_data
        if text.startswith("data:"):
            return decode_data_url(text, ref.label, limits)
        return decode_base64(text, ref.label, limits)
    url = (ref.url or "").strip()
    if url[:5].lower() == "data:":
        return decode_data_url(url, ref.label, limits)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("http", "https"):
        raise InvalidRequest(
            f"{ref.label}: only http(s) and data: image URLs are accepted; "
            f"{'file paths' if scheme in ('', 'file') else scheme + ' URLs'} are refused",
            param=ref.label,
        )
    return await fetch_url(url, ref.label, limits)
