"""The GGUF → safetensors cache is written atomically."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from playground.core.errors import PlaygroundError
from playground.models import gguf_convert as gguf_convert


def test_an_unreadable_gguf_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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


# Run in a child process: convert the packaged GGUF into DEST, but kill -9 ourselves at KILL_AT, after
# files have been written: before the tokenizer is saved (the weights are on disk) or at the rename
# that would publish the finished folder (everything is on disk, completion marker included).
_KILLED_CONVERSION = """
import os, signal, sys
from pathlib import Path
import transformers
from playground.models.gguf_convert import convert_gguf, packaged_gguf

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[2] == "tokenizer":
    transformers.PreTrainedTokenizerBase.save_pretrained = die
else:
    os.replace = die
convert_gguf(packaged_gguf(), Path(sys.argv[1]))
"""


@pytest.mark.slow
@pytest.mark.integration
def test_a_conversion_killed_after_writing_files_is_never_served_and_the_next_one_completes(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models = tmp_path / "models"
    dest = gguf_convert.converted_dir(gguf_convert.packaged_gguf(), models, "smol")
    for kill_at in ("tokenizer", "rename"):
        proc = subprocess.run([sys.executable, "-c", _KILLED_CONVERSION, str(dest), kill_at],
                              cwd=Path(__file__).resolve().parent.parent, capture_output=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
        leftovers = [p for p in models.iterdir() if p.name.startswith(f".{dest.name}.")]
        assert leftovers and any(f.name == "model.safetensors" for p in leftovers for f in p.iterdir())
        assert not dest.exists() and not gguf_convert.is_converted(dest)
    # The half-written temporary folders are never taken for the cache: a new run converts afresh.
    assert gguf_convert.convert_gguf(gguf_convert.packaged_gguf(), dest) == dest
    assert gguf_convert.is_converted(dest)
    model = AutoModelForCausalLM.from_pretrained(dest, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(dest)
    assert model.config.vocab_size == len(tokenizer) and tokenizer.eos_token == "<|im_end|>"
