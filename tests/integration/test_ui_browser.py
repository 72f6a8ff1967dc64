"""The web page (/ui) in a real browser: Debian's headless Chromium, driven by Playwright, against a real server
serving the demo models.

Chromium comes from the system (`/usr/bin/chromium`), never from `playwright install` (which downloads from the
internet). When it is missing and the test runs as root on a machine with apt-get, the session installs it;
otherwise the test fails and says how to install it. Screenshots go to test-output/ui/ (git-ignored).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, expect, sync_playwright

from heylook_llm.demo import (
    EOS_TOKEN,
    SPECIAL_TOKENS,
    ModelShape,
    random_weights,
    train_tokenizer,
    write_llama_gguf,
)
from tests.conftest import start_server
from tests.support.images import encoded, gradient
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM = Path(os.environ.get("HEYLOOK_TEST_CHROMIUM", str(DEBIAN_CHROMIUM)))
"""Debian's chromium; HEYLOOK_TEST_CHROMIUM names another Chromium or Chrome binary (on macOS, for example)."""
SCREENSHOTS = ROOT / "test-output" / "ui"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
HOW_TO_INSTALL = (
    f"The browser test drives Chromium at {CHROMIUM} and it is missing. Install it with "
    "`sudo apt-get update && sudo apt-get install -y chromium` (Debian), or set HEYLOOK_TEST_CHROMIUM to the path "
    "of a Chromium or Chrome binary, then run the test again. `playwright install` is not used: it downloads "
    "browsers from the internet."
)


# --- setup ---------------------------------------------------------------------------------------------------
def _install_chromium() -> None:
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0 or CHROMIUM != DEBIAN_CHROMIUM:
        pytest.fail(HOW_TO_INSTALL, pytrace=False)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update"], [apt, "install", "-y", "chromium"]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
        if result.returncode != 0:
            pytest.fail(
                f"`{' '.join(command)}` failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}\n{HOW_TO_INSTALL}"
            )
    if not CHROMIUM.exists():
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} does not exist.\n{HOW_TO_INSTALL}", pytrace=False)


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        _install_chromium()
    return CHROMIUM


def _write_slow_model(folder: Path) -> Path:
    """A random model big enough to generate a few hundred tokens a second on one thread: an answer long enough to
    stop, and a steady stream for the live plots (the demo models write thousands of tokens a second)."""
    shape = ModelShape(hidden=512, layers=4, heads=8, kv_heads=4, ffn=1536)
    tokenizer = train_tokenizer(shape.vocab)
    weights = random_weights(shape, len(tokenizer.tokens), seed=5, eos_id=tokenizer.token_id(EOS_TOKEN))
    # Every special token's logit is 0 while the others spread around it: greedy answers run to max_tokens.
    for token in SPECIAL_TOKENS:
        weights["lm_head.weight"][tokenizer.token_id(token)] = 0.0
    path = folder / "demo-slow.gguf"
    write_llama_gguf(path, shape, weights, tokenizer, name="demo-slow")
    return path


@pytest.fixture(scope="module")
def ui_server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The demo models (paths made absolute) plus demo-slow, three loaded at most."""
    folder = tmp_path_factory.mktemp("ui-server")
    registry = yaml.safe_load((demo_dir / "models.yaml").read_text())
    for model in registry["models"]:
        for key in ("model_path", "mmproj_path"):
            if key in model["config"]:
                model["config"][key] = str(demo_dir / model["config"][key])
    slow = {"model_path": str(_write_slow_model(folder)), "n_ctx": 4096, "n_threads": 1, "parallel": 2}
    registry["models"].append({"id": "demo-slow", "provider": "llama_cpp", "config": slow})
    registry["max_loaded_models"] = 3
    config = folder / "models.yaml"
    config.write_text(yaml.safe_dump(registry, sort_keys=False))
    server = start_server(folder, config)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), args=LAUNCH_ARGS, timeout=60_000)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser profile (empty localStorage) at desktop size; any script error fails the test."""
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def on_console(message: ConsoleMessage) -> None:
        # A refused request (the 401s the key test serves) is logged by the browser itself; not a script error.
        if message.type == "error" and "Failed to load resource" not in message.text:
            errors.append(message.text)

    page.on("console", on_console)
    yield page
    context.close()
    assert not errors, errors


def _shot(page: Page, name: str, *, full_page: bool = False) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page)


def _open_chat(page: Page, server: ServerProcess, model: str) -> None:
    page.goto(f"{server.base_url}/ui")
    expect(page.locator(f"#model-select option[value='{model}']")).to_be_attached()
    page.select_option("#model-select", model)


def _settings(page: Page, **values: str) -> None:
    page.click("#settings-toggle")
    for name, value in values.items():
        page.fill(f"#{name}", value)
    page.click("#settings-toggle")


def _cancel_counts(server: ServerProcess) -> list[int]:
    """Tokens each cancelled generation had produced, from the worker's info line, in log order."""
    return [int(n) for n in re.findall(r"cancelled after (\d+) tokens", server.log())]


def _wait_for_cancel(server: ServerProcess, before: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = _cancel_counts(server)
        if len(counts) > before:
            return counts[-1]
        time.sleep(0.05)
    raise AssertionError(f"no new cancel in the server log:\n{server.log()[-3000:]}")


# --- chat ----------------------------------------------------------------------------------------------------
def test_chat_streams_an_answer_with_token_counts(page: Page, ui_server: ServerProcess) -> None:
    assert f"web page (chat and dashboard): {ui_server.base_url}/ui" in ui_server.log()
    _open_chat(page, ui_server, "demo-gguf")
    _settings(page, **{"max-tokens": "48", "temperature": "0", "system-prompt": "Answer briefly."})
    page.fill("#prompt", "Write a haiku about local models.")
    page.press("#prompt", "Enter")  # Enter sends, from the keyboard
    answer = page.locator(".message.assistant").last
    expect(answer.locator(".stats")).to_contain_text("+ 48 tokens")
    expect(answer.locator(".stats")).to_contain_text("first token")
    assert answer.locator(".content").inner_text().strip()
    expect(page.locator(".message.user").last).to_contain_text("Write a haiku")
    expect(page.locator("#conversation-list")).to_contain_text("Write a haiku")
    # Regenerate replaces the answer; the conversation survives a reload (localStorage).
    answer.get_by_role("button", name="Regenerate this answer").click()
    expect(page.locator(".message.assistant")).to_have_count(1)
    expect(page.locator(".message.assistant .stats")).to_contain_text("+ 48 tokens")
    page.reload()
    expect(page.locator(".message.user")).to_contain_text("Write a haiku")
    expect(page.locator(".message.assistant .stats")).to_contain_text("+ 48 tokens")
    _shot(page, "chat.png")


def test_stop_cancels_a_long_answer_on_the_server(page: Page, ui_server: ServerProcess) -> None:
    _open_chat(page, ui_server, "demo-slow")
    _settings(page, **{"max-tokens": "4000", "temperature": "0"})
    cancels_before = len(_cancel_counts(ui_server))
    page.fill("#prompt", "Tell me a very long story.")
    page.click("#send")
    answer = page.locator(".message.assistant").last
    # Text appears while the answer is still being written: streamed, not delivered at the end.
    expect(answer.locator(".content")).not_to_be_empty()
    expect(page.locator("#stop")).to_be_visible()
    expect(answer).to_have_class(re.compile(r"\bstreaming\b"))
    page.click("#stop")
    expect(answer.locator(".stats")).to_contain_text("stopped")
    expect(page.locator("#send")).to_be_visible()
    assert _wait_for_cancel(ui_server, cancels_before) < 4000
    _shot(page, "chat-stopped.png")


def test_images_attach_by_file_drop_and_paste_on_a_vision_model(page: Page, ui_server: ServerProcess) -> None:
    _open_chat(page, ui_server, "demo-vision-gguf")
    png = encoded(gradient(64, 48))
    page.set_input_files("#image-input", files=[{"name": "gradient.png", "mimeType": "image/png", "buffer": png}])
    expect(page.locator(".attachment")).to_have_count(1)
    # Drag and drop, and paste, with the same image made into a File inside the page.
    page.evaluate(
        """async (bytes) => {
            const file = new File([new Uint8Array(bytes)], "dropped.png", { type: "image/png" });
            const dropped = new DataTransfer();
            dropped.items.add(file);
            const zone = document.querySelector(".chat-main");
            zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: dropped, bubbles: true, cancelable: true }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: dropped, bubbles: true, cancelable: true }));
            const pasted = new DataTransfer();
            pasted.items.add(new File([new Uint8Array(bytes)], "pasted.png", { type: "image/png" }));
            document.getElementById("prompt").dispatchEvent(
                new ClipboardEvent("paste", { clipboardData: pasted, bubbles: true, cancelable: true }));
        }""",
        list(png),
    )
    expect(page.locator(".attachment")).to_have_count(3)
    page.get_by_role("button", name="Remove image 3").click()
    expect(page.locator(".attachment")).to_have_count(2)
    _settings(page, **{"max-tokens": "8", "temperature": "0"})
    page.fill("#prompt", "What is in these pictures?")
    page.click("#send")
    expect(page.locator(".message.user img")).to_have_count(2)
    answer = page.locator(".message.assistant").last
    expect(answer.locator(".stats")).to_contain_text("+ 8 tokens")
    counted = re.search(r"(\d+) prompt", answer.locator(".stats").inner_text())
    assert counted is not None and int(counted.group(1)) > 20, "the images should add tokens to the prompt"
    expect(page.locator(".attachment")).to_have_count(0)
    _shot(page, "chat-vision.png")
    # A model without vision says so instead of sending.
    page.select_option("#model-select", "demo-gguf")
    page.set_input_files("#image-input", files=[{"name": "g.png", "mimeType": "image/png", "buffer": png}])
    expect(page.locator("#chat-notice")).to_contain_text("does not take images")


def test_markdown_is_rendered_and_escaped(page: Page, ui_server: ServerProcess) -> None:
    page.goto(f"{ui_server.base_url}/ui")
    cases: dict[str, str] = page.evaluate(
        """async () => {
            const { renderMarkdown } = await import("/ui/markdown.js");
            const sources = {
                html: '<img src=x onerror="window.pwned=1"> <script>window.pwned=2</script>',
                code: "Run:\\n```python\\nprint('<b>' & 1)\\n```\\nDone.",
                inline: "**bold**, *it*, `a<b>`, ~~gone~~ and snake_case_name",
                links: "[ok](https://example.com/?a=1&b=2) [bad](javascript:alert(1)) see https://x.org/p.",
                lists: "Steps:\\n- one\\n- two\\n  - nested\\n1. first\\n2. second",
                table: "| a | b |\\n|---|--:|\\n| 1 | <i>2</i> |",
                streaming: "```js\\nlet unfinished = ",
                heading: "# Title\\n> quoted *text*\\n\\n---",
            };
            const out = {};
            for (const [name, source] of Object.entries(sources)) {
                out[name] = renderMarkdown(source);
                const box = document.createElement("div");
                box.innerHTML = out[name];
                document.body.append(box);
            }
            await new Promise((resolve) => setTimeout(resolve, 100));
            out.pwned = String(window.pwned);
            return out;
        }"""
    )
    assert cases["pwned"] == "undefined"
    assert "<img" not in cases["html"] and "<script" not in cases["html"] and "&lt;img" in cases["html"]
    assert '<pre><code class="language-python">print(&#39;&lt;b&gt;&#39; &amp; 1)</code></pre>' in cases["code"]
    assert "<p>Run:</p>" in cases["code"] and "<p>Done.</p>" in cases["code"]
    assert "<strong>bold</strong>" in cases["inline"] and "<em>it</em>" in cases["inline"]
    assert "<code>a&lt;b&gt;</code>" in cases["inline"] and "<del>gone</del>" in cases["inline"]
    assert "snake_case_name" in cases["inline"]
    assert (
        '<a href="https://example.com/?a=1&amp;b=2" target="_blank" rel="noopener noreferrer">ok</a>' in cases["links"]
    )
    assert 'href="javascript' not in cases["links"] and '<a href="https://x.org/p"' in cases["links"]
    assert "<ul><li>one</li><li>two<ul><li>nested</li></ul></li></ul>" in cases["lists"]
    assert "<ol><li>first</li><li>second</li></ol>" in cases["lists"]
    assert '<th class="align-right">b</th>' in cases["table"] and "&lt;i&gt;2&lt;/i&gt;" in cases["table"]
    assert '<code class="language-js">let unfinished = </code>' in cases["streaming"]
    assert (
        "<h1>Title</h1>" in cases["heading"]
        and "<blockquote><p>quoted <em>text</em></p></blockquote>" in cases["heading"]
    )
    assert cases["heading"].endswith("<hr>")


# --- dashboard -----------------------------------------------------------------------------------------------
def _generate_in_background(server: ServerProcess, stop: threading.Event) -> threading.Thread:
    """A client generating on demo-slow until told to stop (OpenAI and Ollama requests, for the history)."""

    def run() -> None:
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            while not stop.is_set():
                http.post(
                    "/v1/chat/completions",
                    json={"model": "demo-slow", "messages": [{"role": "user", "content": "go"}], "max_tokens": 300},
                )
                ollama = {"model": "demo-slow", "prompt": "go", "stream": False, "options": {"num_predict": 100}}
                http.post("/api/generate", json=ollama)

    thread = threading.Thread(target=run, name="ui-test-client", daemon=True)
    thread.start()
    return thread


def _row(page: Page, model: str) -> Any:
    return page.locator(f"#models-table tr[data-model='{model}']")


def test_dashboard_loads_and_unloads_and_plots_live_figures(page: Page, ui_server: ServerProcess) -> None:
    page.goto(f"{ui_server.base_url}/ui#dashboard")
    expect(page.locator("#dash-connection")).to_contain_text("Live")
    row = _row(page, "demo-mlx")
    expect(row.locator(".badge")).to_have_text("Not loaded")
    row.get_by_role("button", name="Load demo-mlx", exact=True).click()
    expect(row.locator(".badge")).to_contain_text("Loaded")
    expect(row.locator(".badge")).to_contain_text("unloads in")
    expect(page.locator("#dash-notice")).to_contain_text("demo-mlx loaded")
    row.get_by_role("button", name="Unload demo-mlx", exact=True).click()
    expect(row.locator(".badge")).to_have_text("Not loaded")
    expect(page.locator("#dash-notice")).to_contain_text("demo-mlx unloaded")

    stop = threading.Event()
    client = _generate_in_background(ui_server, stop)
    try:
        caption = page.locator("#plot-tps-now")
        expect(caption).to_contain_text(re.compile(r"demo-slow [1-9][\d.]* tok/s"), timeout=20_000)
        # The plot is redrawn from the server's push once a second: three new pictures and tick times come within
        # a few seconds (the margin is for a busy machine, not for a slower design).
        canvas = page.locator("#plot-tps")
        drawn = {canvas.evaluate("c => c.toDataURL()")}
        times = {page.locator("#dash-connection").inner_text()}
        started = time.monotonic()
        while time.monotonic() - started < 8 and (len(drawn) < 4 or len(times) < 4):
            drawn.add(canvas.evaluate("c => c.toDataURL()"))
            times.add(page.locator("#dash-connection").inner_text())
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        assert len(drawn) >= 4 and len(times) >= 4 and elapsed < 6, (len(drawn), sorted(times), elapsed)
        expect(page.locator("#plot-running-now")).to_contain_text(re.compile(r"demo-slow [12] running"))
        expect(_row(page, "demo-slow").locator(".badge")).to_contain_text("busy")
        history = page.locator("#history-table tbody")
        expect(history).to_contain_text("openai", timeout=20_000)
        expect(history).to_contain_text("ollama", timeout=20_000)
        expect(history.locator("tr").first).to_contain_text("demo-slow")
        _shot(page, "dashboard.png", full_page=True)
    finally:
        stop.set()
        client.join(timeout=60)


# --- API key, keyboard, sizes --------------------------------------------------------------------------------
def test_page_asks_for_an_api_key_on_401_and_sends_it(page: Page, ui_server: ServerProcess) -> None:
    # The server has no key yet (the security layer is separate): refuse requests here the way it will.
    seen: list[str | None] = []

    def guard(route: Route) -> None:
        header = route.request.headers.get("authorization")
        seen.append(header)
        if header != "Bearer sesame":
            body = '{"error": {"message": "a valid API key is required", "type": "invalid_request_error"}}'
            route.fulfill(status=401, body=body, content_type="application/json")
        else:
            route.continue_()

    page.route(re.compile(r".*/v1/(models|dashboard/stream)$"), guard)
    page.goto(f"{ui_server.base_url}/ui")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#key-reason")).to_contain_text("needs an API key")
    page.fill("#key-input", "sesame")
    page.press("#key-input", "Enter")
    expect(dialog).to_be_hidden()
    expect(page.locator("#model-select option[value='demo-gguf']")).to_be_attached()
    assert seen[0] is None and seen[-1] == "Bearer sesame"
    assert page.evaluate("sessionStorage.getItem('heylookllm.apiKey')") == "sesame"
    assert page.evaluate("localStorage.getItem('heylookllm.apiKey')") is None  # "remember" was not ticked
    assert "sesame" not in page.content()
    page.click("#tab-dashboard")
    expect(page.locator("#dash-connection")).to_contain_text("Live")
    assert seen[-1] == "Bearer sesame"


def test_keyboard_labels_and_window_sizes(browser: Browser, ui_server: ServerProcess) -> None:
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport)
        page = context.new_page()
        page.goto(f"{ui_server.base_url}/ui")
        expect(page.locator("#model-select option[value='demo-gguf']")).to_be_attached()
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll("input, select, textarea, button")]
                .filter((e) => e.type !== "file")
                .filter((e) => !(e.labels?.length || e.getAttribute("aria-label") || e.textContent.trim()))
                .map((e) => e.outerHTML)"""
        )
        assert not unlabelled
        # Tabs move with the arrow keys.
        page.focus("#tab-chat")
        page.keyboard.press("ArrowRight")
        expect(page.locator("#view-dashboard")).to_be_visible()
        expect(page.locator("#tab-dashboard")).to_be_focused()
        expect(page.locator("#models-table tr[data-model='demo-gguf']")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        if name == "phone":
            _shot(page, "phone-dashboard.png", full_page=True)
        page.keyboard.press("ArrowLeft")
        expect(page.locator("#view-chat")).to_be_visible()
        for element in ("#prompt", "#send", "#model-select"):
            expect(page.locator(element)).to_be_in_viewport()
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        if name == "phone":
            expect(page.locator("#conversations")).to_be_hidden()
            page.click("#conversations-toggle")
            expect(page.locator("#conversations")).to_be_visible()
            page.click("#new-chat")
            expect(page.locator("#conversations")).to_be_hidden()
            _shot(page, "phone-chat.png")
        context.close()
