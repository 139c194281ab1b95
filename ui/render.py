"""Engine results as Markdown/HTML for the page. Formatting only; every number comes from the engine."""

import html
from collections.abc import Sequence

from playground.scoring.rounds import SampledKL
from playground.scoring.scorer import ResponseScore

LETTERS = "ABCD"


def slot_label(i: int) -> str:
    return f"Response {LETTERS[i]}"


def kl_cell(kl: SampledKL) -> str:
    if not kl.from_policy:
        return "— (not sampled from π_θ)"
    if kl.value is None:
        return "—, biased: " + ", ".join(kl.biased)
    return f"{kl.value:+.3f}"


def score_table(score: ResponseScore, kl: SampledKL, max_tokens: int) -> str:
    """The numbers under one response, each with what it means. `max_tokens` is the scorer's
    limit on prompt+response tokens, named where it cut this one."""
    cut = f" (prompt+response cut to {max_tokens} tokens)" if score.truncated else ""
    return "\n".join([
        "| score | value |",
        "|---|---:|",
        f"| log π_θ(y\\|x) | {score.logp_policy:.3f} |",
        f"| log π_ref(y\\|x) | {score.logp_ref:.3f} |",
        f"| log-ratio log π_θ − log π_ref | {score.log_ratio:+.4f} |",
        f"| implicit reward β·log-ratio | **{score.reward:+.4f}** |",
        f"| tokens (end-of-turn incl.) | {score.n_tokens}{cut} |",
        f"| KL estimate Σ log-ratio over the sampled tokens | {kl_cell(kl)} |",
    ])


def token_view(pieces: Sequence[str], ratios: Sequence[float]) -> str:
    """Each token tinted by its log-ratio: green where π_θ gives it more probability than π_ref,
    red where less; hover for the number. Colour saturates at |log-ratio| = 1 nat."""
    spans = []
    for piece, r in zip(pieces, ratios, strict=True):
        strength = min(abs(r), 1.0)
        colour = f"rgba(22,163,74,{strength:.2f})" if r > 0 else f"rgba(220,38,38,{strength:.2f})"
        text = html.escape(piece).replace("\n", "↵<br>")
        spans.append(f'<span title="log-ratio {r:+.4f}" style="background:{colour};border-radius:3px">{text}</span>')
    legend = ('<div style="font-size:0.8em;opacity:0.7">per-token log π_θ − log π_ref: '
              '<span style="background:rgba(22,163,74,0.8)">&nbsp;policy higher&nbsp;</span> '
              '<span style="background:rgba(220,38,38,0.8)">&nbsp;reference higher&nbsp;</span></div>')
    return f'{legend}<div style="font-family:monospace;white-space:pre-wrap;line-height:1.7">{"".join(spans)}</div>'


def preference_table(matrix: Sequence[Sequence[float]]) -> str:
    """The Bradley–Terry probability of each row's response being preferred to each column's."""
    k = len(matrix)
    head = "| P(row ≻ column) = σ(r_row − r_col) | " + " | ".join(LETTERS[j] for j in range(k)) + " |"
    rule = "|---|" + "---:|" * k
    body = [f"| **{LETTERS[i]}** | " + " | ".join("—" if i == j else f"{matrix[i][j]:.3f}" for j in range(k)) + " |"
            for i in range(k)]
    return "\n".join([head, rule, *body])
