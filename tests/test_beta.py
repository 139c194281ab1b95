"""β's default and check live once (`playground.core.beta`): every command line, the app's state,
the training configs and the scorer take them from there and say the same thing of a bad β."""

import inspect
import math

import pytest

from cli import data as data_cli
from cli import score as score_cli
from cli import serve as serve_cli
from cli import train as train_cli
from playground.core.beta import BETA_RULE, DEFAULT_BETA, check_beta
from playground.core.errors import PlaygroundError

BAD = [0, -0.1, math.nan, math.inf, True]


def parsers() -> dict:
    """Each command line that takes the DPO β, as a function of its arguments."""
    return {
        "score": lambda extra: score_cli.parse_args(["--pairs", "p.jsonl", "--out", "o.jsonl", *extra]),
        "serve": lambda extra: serve_cli.parse_args(extra),
        "data pregenerate": lambda extra: data_cli.build_parser().parse_args(["pregenerate", "--set", "s", *extra]),
        "train": lambda extra: train_cli.parse_args(["--pairs", "p.jsonl", "--out", "ckpts", *extra]),
    }


def test_every_default_beta_is_the_engine_constant() -> None:
    from playground.training.dpo import DPOConfig
    from service.state import AppState, build_state

    assert DEFAULT_BETA == 0.1
    assert {name: parse([]).beta for name, parse in parsers().items()} == dict.fromkeys(parsers(), DEFAULT_BETA)
    assert DPOConfig().beta == DEFAULT_BETA
    assert AppState.__dataclass_fields__["beta"].default == DEFAULT_BETA
    assert inspect.signature(build_state).parameters["beta"].default == DEFAULT_BETA


@pytest.mark.parametrize("beta", BAD, ids=str)
def test_every_check_of_beta_says_the_same(beta: float, capsys: pytest.CaptureFixture[str]) -> None:
    from playground.training.dpo import DPOConfig
    from playground.training.rlhf import RLHFConfig

    with pytest.raises(PlaygroundError) as checked:
        check_beta(beta)
    assert str(checked.value) == f"{BETA_RULE} (got {beta!r})"
    for config in (DPOConfig, RLHFConfig):
        with pytest.raises(PlaygroundError) as validated:
            config(beta=beta).validate()
        assert str(validated.value) == BETA_RULE  # the first and only problem listed
    if isinstance(beta, bool):
        return  # on a command line "True" is no number at all
    for name, parse in parsers().items():
        if name == "train":
            continue  # checked by DPOConfig.validate (above), with every other setting of the run
        with pytest.raises(SystemExit) as exited:
            parse(["--beta", str(beta)])
        assert exited.value.code == 2
        assert f"argument --beta: {BETA_RULE} (got {float(beta)!r})" in capsys.readouterr().err

def test_a_good_beta_passes_every_check() -> None:
    assert check_beta(2) == 2.0 and isinstance(check_beta(2), float)
    assert all(parse(["--beta", "0.25"]).beta == 0.25 for parse in parsers().values())
