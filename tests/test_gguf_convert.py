"""The GGUF → safetensors cache is written atomically."""

from pathlib import Path

import pytest

from playground.core.errors import PlaygroundError
from playground.models import gguf_convert as gguf_convert


def test_interrupted_conversion_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"x")

    class Boom(RuntimeError):
        pass

    def fake_from_pretrained(*args, **kwargs):
        raise Boom("killed half way")

    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    dest = gguf_convert.converted_dir(gguf, tmp_path / "models")
    with pytest.raises(PlaygroundError, match="not a GGUF model file"):
        gguf_convert.convert_gguf(gguf, dest)
    assert not dest.exists()
    assert list((tmp_path / "models").iterdir()) == []  # no temp folder left behind


def test_cache_key_follows_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    assert gguf_convert.converted_dir(a, tmp_path, "m") != gguf_convert.converted_dir(b, tmp_path, "m")
    b.write_bytes(b"one")
    assert gguf_convert.converted_dir(a, tmp_path, "m") == gguf_convert.converted_dir(b, tmp_path, "m")


def test_complete_folder_is_reused(tmp_path: Path) -> None:
    dest = tmp_path / "done"
    dest.mkdir()
    (dest / "conversion-complete").write_text("ok")
    # A missing GGUF would fail if conversion were attempted: the cache hit must not look at it.
    assert gguf_convert.convert_gguf(tmp_path / "missing.gguf", dest) == dest
