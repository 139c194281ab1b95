"""The generation scheduler: one continuous batch, per-row seeds and adapters, Stop per session,
hot swaps mid-batch, and the bounds (tiny model, fp32 CPU)."""

import threading
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from playground.core.errors import PlaygroundError
from playground.inference.scheduler import (
    FORWARD_POSITIONS,
    Busy,
    Request,
    Row,
    Scheduler,
    SchedulerConfig,
    length_groups,
    next_token,
    row_seed,
)
from playground.inference.settings import CUT, STOPPED, GenerationSettings, prompt_ids
from playground.models.checkpoints import attach_checkpoint, serve_checkpoint, set_policy_weights, write_checkpoint
from playground.models.roles import LOADED_POLICY_ADAPTER, Models, ModelsConfig, Role, adapter_params, load_models
from tests.test_models import perturb_adapter, perturbed_policy

GREEDY = GenerationSettings(temperature=0, max_new_tokens=12)
SAMPLED = GenerationSettings(temperature=1.0, top_p=0.9, top_k=40, repetition_penalty=1.2, max_new_tokens=12, seed=11)
LONG = GenerationSettings(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=40, seed=3)
# Sampled text from the random tiny model barely depends on its adapter (two adapters differ in 2-3 of
# 40 tokens, equal on some CPUs); greedy text differs in nearly every token.
LONG_GREEDY = replace(LONG, temperature=0)


@pytest.fixture
def models(tiny_model_dir: Path) -> Models:
    return perturbed_policy(load_models(ModelsConfig(sft=str(tiny_model_dir))))


def ids(models: Models, text: str) -> list[int]:
    return prompt_ids(models, [{"role": "user", "content": text}])[0].tolist()


def run(scheduler: Scheduler, slots: list[Role], prompts: list[list[int]], settings: GenerationSettings,
        session: str = "") -> Request:
    request = scheduler.submit(slots, prompts, settings, session=session)
    for _ in request.progress():
        pass
    return request


def tokens(request: Request) -> list[list[int]]:
    return [row.sampled for row in request.rows]


def joined_at_one_step(scheduler: Scheduler, submissions: Iterable[tuple[list[Role], list[list[int]],
                                                                         GenerationSettings]]
                       ) -> tuple[list[Request], list[tuple[int, int]]]:
    """Submit every (slots, prompts, settings) before the worker starts, so all join the batch at one
    step, and run them to the end: the requests, and the (rows, width) of each prefill forward."""
    model = scheduler.models.policy.model
    shapes: list[tuple[int, int]] = []
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kw: shapes.append(tuple(kw["input_ids"].shape)) if kw["input_ids"].shape[1] > 1 else None,
        with_kwargs=True)
    try:
        scheduler._thread = threading.current_thread()  # no worker yet: every request waits
        requests = [scheduler.submit(slots, prompts, settings, session=str(i))
                    for i, (slots, prompts, settings) in enumerate(submissions)]
        scheduler._thread = threading.Thread(target=scheduler._run, daemon=True)
        scheduler._thread.start()
        for request in requests:
            for _ in request.progress():
                pass
    finally:
        hook.remove()
    return requests, shapes


def test_greedy_rows_equal_transformers_generate_alone_and_left_padded(models: Models) -> None:
    """The loop's KV cache, padding and positions are right: each row's greedy tokens are those of
    transformers' own `generate` on that row alone, also when prompts of other lengths share the batch."""
    scheduler = Scheduler(models)
    scheduler.end_ids = set()  # every row runs its 12 tokens
    short, long = ids(models, "Hi."), ids(models, "Tell me something long about the weather in spring, please.")
    request = run(scheduler, [models.policy, models.reference], [short, long], GREEDY)
    for row, prompt, adapter_on in zip(request.rows, [short, long], [True, False], strict=True):
        peft, batch = models.policy.model, torch.tensor([prompt])
        # The mask is explicit: the prompt holds the pad id (= EOS), which transformers would mask out otherwise.
        greedy = {"attention_mask": torch.ones_like(batch), "max_new_tokens": 12, "do_sample": False,
                  "eos_token_id": None, "temperature": None, "top_p": None, "top_k": None}
        with torch.no_grad():
            if adapter_on:
                out = peft.generate(input_ids=batch, **greedy)
            else:
                with peft.disable_adapter():
                    out = peft.generate(input_ids=batch, **greedy)
        assert row.sampled == out[0, len(prompt):].tolist()


@pytest.mark.parametrize("settings", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_same_seed_same_text_alone_or_joining_a_running_batch(models: Models, settings: GenerationSettings) -> None:
    scheduler = Scheduler(models)
    scheduler.end_ids = set()
    prompt = ids(models, "Say hi.")
    alone = tokens(run(scheduler, [models.policy, models.reference], [prompt, prompt], settings))

    others = scheduler.submit([models.policy, models.sft], [ids(models, "Another, longer prompt here.")] * 2, LONG)
    next(others.progress())  # the other request is decoding: ours joins its batch at a token boundary
    ours = scheduler.submit([models.policy, models.reference], [prompt, prompt], settings)
    late = scheduler.submit([models.reference], [ids(models, "x")], replace(LONG, seed=9))
    assert len(others.rows[0].sampled) < LONG.max_new_tokens  # still running when ours joined
    for request in (ours, others, late):
        for _ in request.progress():
            pass
    assert tokens(ours) == alone
    assert alone[0] != alone[1]  # the two slots differ (adapter on/off), so the check is not vacuous
    assert [r.ending for r in others.rows] == [CUT, CUT]


@pytest.mark.parametrize("settings", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_a_longer_prompt_joining_a_running_batch_pads_the_running_rows_further(
        models: Models, settings: GenerationSettings) -> None:
    """A prompt longer than the running rows' whole cache (prompt and every token they may sample)
    joins their batch: their caches and masks are left-padded further, and every row of both
    requests samples the tokens it samples alone."""
    scheduler = Scheduler(models)
    scheduler.end_ids = set()
    short = ids(models, "a")
    long = ids(models, " ".join(["The capital of France is Paris, and the sea is wide."] * 3))
    first = replace(settings, max_new_tokens=20, seed=5)
    assert len(long) > len(short) + first.max_new_tokens
    alone = [tokens(run(scheduler, [models.policy, models.reference], [short, short], first)),
             tokens(run(scheduler, [models.reference, models.policy], [long, long], settings))]
    decode_rows: list[int] = []
    hook = models.policy.model.register_forward_pre_hook(
        lambda _m, _a, kw: decode_rows.append(kw["input_ids"].shape[0]) if kw["input_ids"].shape[1] == 1 else None,
        with_kwargs=True)
    try:
        running = scheduler.submit([models.policy, models.reference], [short, short], first)
        next(running.progress())
        with models.lock:  # the worker waits at its next step: the running rows are mid-way
            assert len(running.rows[0].sampled) < first.max_new_tokens
            joining = scheduler.submit([models.reference, models.policy], [long, long], settings)
        for request in (running, joining):
            for _ in request.progress():
                pass
    finally:
        hook.remove()
    assert 4 in decode_rows  # the four rows decoded as one batch
    assert [tokens(running), tokens(joining)] == alone
    assert all(a[0] != a[1] for a in alone)  # adapter on and off differ: a mix-up of rows would show


def test_rows_with_one_prompt_and_adapter_share_one_prefill_and_sample_as_alone(models: Models) -> None:
    """Three requests on one prompt join in one step: their policy rows share one prompt forward,
    the reference rows another (the prefill runs 2 rows, not 6), and each request's tokens are the
    ones it samples alone."""
    scheduler = Scheduler(models)
    scheduler.end_ids = set()
    prompt = ids(models, "Say hi.")
    settings = [replace(SAMPLED, seed=s) for s in (1, 2, 3)]
    alone = [tokens(run(scheduler, [models.policy, models.reference], [prompt, prompt], s)) for s in settings]
    requests, prefills = joined_at_one_step(scheduler, [
        ([models.policy, models.reference], [prompt, prompt], s) for s in settings])
    assert [rows for rows, _ in prefills] == [2]
    assert [tokens(r) for r in requests] == alone
    assert len({tuple(t[0]) for t in alone}) == 3  # the seeds differ, so a shared draw would show


def test_short_and_long_prompts_joining_together_prefill_in_forwards_of_their_own_width(models: Models) -> None:
    """Two short prompts and two long ones join at one step: they are prefilled in two forwards, each
    as wide as its own prompts (one forward would compute the long width for every row), and every
    request's tokens are the ones it samples alone."""
    scheduler = Scheduler(models)
    scheduler.end_ids = set()
    long_text = "Tell me about the sea, the wind and the sky, " * 8
    prompts = [ids(models, text) for text in ("Hi.", "Say hi.", long_text + "now.", long_text + "please.")]
    assert len(prompts[2]) - len(prompts[0]) > 2 * FORWARD_POSITIONS
    alone = [tokens(run(scheduler, [models.policy], [p], replace(SAMPLED, seed=i))) for i, p in enumerate(prompts)]
    requests, widths = joined_at_one_step(scheduler, [
        ([models.policy], [p], replace(SAMPLED, seed=i)) for i, p in enumerate(prompts)])
    assert sorted(widths) == [(2, max(map(len, prompts[:2]))), (2, max(map(len, prompts[2:])))]
    assert [tokens(r) for r in requests] == alone


def test_length_groups_split_where_padding_costs_more_than_a_forward() -> None:
    def row(length: int, adapter: str = "a") -> Row:
        return Row(Request("", threading.Event()), 0, [1] * length, torch.nn.Identity(), adapter, "w", SAMPLED,
                   torch.Generator())

    def widths(lengths: list[int]) -> list[list[int]]:
        return [[len(r.prompt) for r in g] for g in length_groups([row(n) for n in lengths])]

    assert widths([50, 52, 55]) == [[50, 52, 55]]  # 7 positions of padding: one forward
    assert widths([120, 10, 12, 118]) == [[10, 12], [118, 120]]  # 2 × 108 positions of padding: two
    assert widths([10, 10 + FORWARD_POSITIONS]) == [[10, 10 + FORWARD_POSITIONS]]  # padding = a forward: one
    assert widths([10] * 3 + [10 + FORWARD_POSITIONS]) == [[10] * 3, [10 + FORWARD_POSITIONS]]  # 3× that: two
    same = [row(30, "policy"), row(30, "base"), row(30, "policy")]
    assert [len(g) for g in length_groups(same)] == [3]  # one prompt, two adapters: one forward, shared prefills


def test_each_slot_has_its_own_seed() -> None:
    assert row_seed(5, 0) != row_seed(5, 1)
    assert row_seed(5, 1) != row_seed(6, 0)
    assert 0 <= row_seed(2**62, 3) < 2**63


def test_stop_ends_one_sessions_rows_while_others_continue(models: Models) -> None:
    scheduler = Scheduler(models)
    scheduler.end_ids = set()
    stop = threading.Event()
    mine = scheduler.submit([models.policy, models.reference], [ids(models, "a")] * 2, LONG, stop, session="a")
    theirs = scheduler.submit([models.policy], [ids(models, "b")], LONG, session="b")
    steps = mine.progress()
    next(steps)
    stop.set()
    for _ in steps:
        pass
    for _ in theirs.progress():
        pass
    assert [r.ending for r in mine.rows] == [STOPPED, STOPPED]
    assert all(len(r.sampled) < LONG.max_new_tokens for r in mine.rows)
    assert theirs.rows[0].ending == CUT and len(theirs.rows[0].sampled) == LONG.max_new_tokens


def test_a_checkpoint_served_mid_batch_serves_new_rows_while_running_rows_finish_on_theirs(
        models: Models, tmp_path: Path) -> None:
    peft = models.policy.model
    folders = []
    for seed in (1, 2):
        perturb_adapter(peft, seed=seed)
        folders.append(write_checkpoint(peft, tmp_path, {"engine": "test"}))
    x, y = (attach_checkpoint(models, f) for f in folders)
    serve_checkpoint(models, x)
    scheduler = Scheduler(models)
    scheduler.end_ids = set()
    prompt = ids(models, "Say hi.")

    before = scheduler.submit([models.policy], [prompt], LONG_GREEDY)
    next(before.progress())
    serve_checkpoint(models, y)  # under models.lock, between two steps
    after = scheduler.submit([models.policy], [prompt], LONG_GREEDY)
    for request in (before, after):
        for _ in request.progress():
            pass
    assert before.rows[0].weights == x.ident and before.rows[0].adapter == x.adapter
    assert after.rows[0].weights == y.ident and after.rows[0].adapter == y.adapter
    # Each equals its checkpoint's own text, generated alone from the checkpoint's slot.
    assert tokens(before) == tokens(run(scheduler, [x], [prompt], LONG_GREEDY))
    assert tokens(after) == tokens(run(scheduler, [y], [prompt], LONG_GREEDY))
    assert tokens(before) != tokens(after)


def test_rows_of_a_policy_loaded_from_outside_the_checkpoints_finish_on_it_across_a_publish(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    """`--policy <adapter folder>` that is no attached checkpoint: its rows pin a fixed copy of it,
    so a publish (training's, which overwrites the served adapter in place) mid-row changes nothing
    of their text, and rows that join after the publish generate from the new weights."""
    donor = load_models(ModelsConfig(sft=str(tiny_model_dir)))
    perturb_adapter(donor.policy.model, seed=4)
    folder = write_checkpoint(donor.policy.model, tmp_path / "elsewhere", {"engine": "test"})
    models = load_models(ModelsConfig(sft=str(tiny_model_dir), policy=str(folder)))
    scheduler = Scheduler(models)
    scheduler.end_ids = set()
    prompt = ids(models, "Say hi.")
    alone = tokens(run(scheduler, [models.policy], [prompt], LONG_GREEDY))
    loaded = models.policy.ident

    before = scheduler.submit([models.policy], [prompt], LONG_GREEDY)
    next(before.progress())
    trained = {n: torch.randn(p.shape, generator=torch.Generator().manual_seed(9)) if "lora_B" in n else p.detach()
               for n, p in adapter_params(models.policy.model).items()}
    set_policy_weights(models, trained, "trained", f"{models.sft.ident}+trained")  # training's publish
    after = scheduler.submit([models.policy], [prompt], LONG_GREEDY)
    for request in (before, after):
        for _ in request.progress():
            pass
    assert before.rows[0].weights == loaded and before.rows[0].adapter == LOADED_POLICY_ADAPTER
    assert tokens(before) == alone
    trained_alone = tokens(run(scheduler, [models.policy], [prompt], LONG_GREEDY))
    assert after.rows[0].weights == f"{models.sft.ident}+trained" and tokens(after) == trained_alone
    assert trained_alone != alone  # the publish changed the weights: the first check can fail


def test_the_waiting_bound_answers_busy_and_the_waiting_request_runs_later(models: Models) -> None:
    scheduler = Scheduler(models, SchedulerConfig(max_batch=1, max_waiting=2))
    scheduler.end_ids = set()
    prompt = ids(models, "a")
    running = scheduler.submit([models.policy], [prompt], LONG, session="s1")
    next(running.progress())  # decoding: the batch (1 row) is full from now on
    with models.lock:  # the worker waits at its next step: the running row can neither end nor make room
        waiting = scheduler.submit([models.policy, models.reference], [prompt] * 2, GREEDY, session="s2")
        with pytest.raises(Busy, match="busy: 2 sequences are waiting"):
            scheduler.submit([models.policy], [prompt], GREEDY, session="s3")
    for request in (running, waiting):
        for _ in request.progress():
            pass
    assert [r.ending for r in running.rows] == [CUT]
    assert [r.ending for r in waiting.rows] == [CUT, CUT]  # the waiting request ran once there was room
    assert tokens(waiting) == tokens(run(scheduler, [models.policy, models.reference], [prompt] * 2, GREEDY))


def test_one_session_holds_at_most_its_share(models: Models) -> None:
    scheduler = Scheduler(models, SchedulerConfig(per_session=2))
    scheduler.end_ids = set()
    prompt = ids(models, "a")
    first = scheduler.submit([models.policy], [prompt], LONG, session="s")
    with pytest.raises(Busy, match="this session already has 1 sequences generating"):
        scheduler.submit([models.policy, models.reference], [prompt] * 2, GREEDY, session="s")
    other = scheduler.submit([models.policy, models.reference], [prompt] * 2, GREEDY, session="t")  # another session
    for request in (first, other):
        for _ in request.progress():
            pass
    assert len(first.rows[0].sampled) == LONG.max_new_tokens and len(other.rows) == 2


def test_bad_scheduler_settings_are_listed_at_once() -> None:
    with pytest.raises(PlaygroundError) as err:
        SchedulerConfig(max_batch=0, max_waiting=-1, per_session=0).validate()
    assert str(err.value).count(";") == 2


def test_next_token_applies_penalty_temperature_top_k_top_p_in_transformers_order() -> None:
    scores = torch.tensor([2.0, 1.0, 0.5, -1.0])
    greedy = GenerationSettings(temperature=0, repetition_penalty=5.0)
    # The penalty divides a positive logit (2 → 0.4) and multiplies a negative one: token 1 wins.
    assert next_token(scores, [0], greedy, torch.Generator()) == 1
    # top-k 1 leaves only the best token, whatever the draw.
    top1 = GenerationSettings(temperature=1.0, top_k=1, top_p=1.0)
    assert {next_token(scores, [], top1, torch.Generator().manual_seed(s)) for s in range(20)} == {0}
    # top-p 0.5: p(0) = 0.61 already reaches it, so token 0 alone stays.
    nucleus = GenerationSettings(temperature=1.0, top_k=0, top_p=0.5)
    assert {next_token(scores, [], nucleus, torch.Generator().manual_seed(s)) for s in range(20)} == {0}
    # Unfiltered, the same draws reach other tokens too (so the two checks above can fail).
    free = GenerationSettings(temperature=1.0, top_k=0, top_p=1.0)
    assert len({next_token(scores, [], free, torch.Generator().manual_seed(s)) for s in range(50)}) > 1


@pytest.mark.parametrize(("top_k", "top_p"), [(4, 0.8), (0, 0.8), (3, 1.0), (0, 1.0)])
def test_sampling_follows_transformers_warpers_distribution(top_k: int, top_p: float) -> None:
    """Top-k and top-p cut to the candidates before the draw: the frequencies of 20000 draws are the
    probabilities of transformers' own temperature, top-k and top-p warpers (within 0.01)."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    scores = torch.tensor([2.0, 1.5, 1.2, 0.9, 0.3, -0.4, -1.0, 0.6])
    settings = GenerationSettings(temperature=0.7, top_k=top_k, top_p=top_p)
    warpers = LogitsProcessorList([TemperatureLogitsWarper(0.7), *([TopKLogitsWarper(top_k)] if top_k else []),
                                   *([TopPLogitsWarper(top_p)] if top_p < 1 else [])])
    expected = warpers(torch.tensor([[0]]), scores[None].clone())[0].softmax(-1)
    generator = torch.Generator().manual_seed(0)
    draws = torch.tensor([next_token(scores, [], settings, generator) for _ in range(20_000)])
    frequencies = torch.bincount(draws, minlength=len(scores)) / len(draws)
    assert torch.allclose(frequencies, expected, atol=0.01)
    assert ((expected == 0) == (frequencies == 0)).all()  # the cut tokens are never drawn, the others are


def test_a_reader_that_leaves_early_frees_its_rows(models: Models) -> None:
    from playground.inference.generation import stream_generate

    scheduler = Scheduler(models)
    scheduler.end_ids = set()
    stream = stream_generate(scheduler, [models.policy], [{"role": "user", "content": "a"}], LONG)
    first = next(stream)
    stream.close()  # as Gradio closes a handler's generator when the page goes away
    after = scheduler.submit([models.reference], [ids(models, "b")], GREEDY)
    for _ in after.progress():
        pass
    assert len(first.token_ids[0]) < LONG.max_new_tokens
    assert scheduler.running() == 0  # the abandoned row ended (stopped) instead of running its 40 tokens


def tiny_model_like(config, tokenizer_dir: Path, folder: Path) -> Path:
    """A random causal LM of `config`'s architecture (2 small layers), with the tiny Llama's tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config.vocab_size, config.pad_token_id, config.eos_token_id = len(tokenizer), tokenizer.pad_token_id, \
        tokenizer.eos_token_id
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 256}


@pytest.mark.parametrize("architecture", ["mistral", "gemma2"])
def test_sliding_window_models_are_refused_at_load(architecture: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    """Mistral (a window on every layer) and Gemma 2 (every other layer, `layer_types`): their cache
    keeps a rolling window, which the loop's cache joins would corrupt, so the scheduler refuses them."""
    from transformers import Gemma2Config, MistralConfig

    config = (MistralConfig(**SMALL, sliding_window=16) if architecture == "mistral"
              else Gemma2Config(**SMALL, sliding_window=16))
    folder = tiny_model_like(config, tiny_model_dir, tmp_path / architecture)
    models = load_models(ModelsConfig(sft=str(folder)))
    layers = "2 of its 2 layers" if architecture == "mistral" else "1 of its 2 layers"
    with pytest.raises(PlaygroundError, match=f"{folder}: {layers} keep a window of the past tokens"):
        Scheduler(models)


def test_a_full_attention_model_of_another_architecture_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Qwen2 names a sliding window in its config but attends fully on every layer: it generates."""
    from transformers import Qwen2Config

    models = load_models(ModelsConfig(sft=str(tiny_model_like(Qwen2Config(**SMALL), tiny_model_dir, tmp_path))))
    request = run(Scheduler(models), [models.policy], [ids(models, "a")], GREEDY)
    assert len(request.rows[0].sampled) >= 1
