from __future__ import annotations

from pathlib import Path

import pytest

from heylook_llm.cli import build_parser, default_port, find_config
from heylook_llm.config.settings import ApiMode

pytestmark = pytest.mark.unit


def test_ports_default_per_api() -> None:
    assert default_port(ApiMode.BOTH, None) == 8080
    assert default_port(ApiMode.OPENAI, None) == 8080
    assert default_port(ApiMode.OLLAMA, None) == 11434
    assert default_port(ApiMode.OLLAMA, 9000) == 9000


def test_serve_defaults() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.api, args.host, args.port, args.config, args.model_id, args.log_level) == (
        "both",
        "127.0.0.1",
        None,
        None,
        None,
        "INFO",
    )


def test_stream_interval_is_milliseconds_within_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args(["serve"]).stream_interval_ms == 5.0
    assert build_parser().parse_args(["serve", "--stream-interval-ms", "0"]).stream_interval_ms == 0.0
    for bad in ("-1", "fast", "5000"):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(["serve", "--stream-interval-ms", bad])
        assert exit_info.value.code == 2
        assert "--stream-interval-ms" in capsys.readouterr().err


def test_config_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert find_config(None) is None
    user = tmp_path / "cfg" / "heylookllm" / "models.yaml"
    user.parent.mkdir(parents=True)
    user.write_text("models: []\n")
    assert find_config(None) == user
    local = tmp_path / "models.yaml"
    local.write_text("models: []\n")
    assert find_config(None) == local
    explicit = tmp_path / "other.yaml"
    assert find_config(explicit) == explicit
