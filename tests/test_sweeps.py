"""Every sweep file in sweeps/ loads and validates; sweep-level config errors name the key.

No Ray here: ``fetalgan.config.load_sweep`` (the one loader) checks a sweep without starting
anything.
"""

from pathlib import Path

import pytest
import yaml

from fetalgan.config import ConfigError, SweepConfig, TrainConfig, to_dict
from fetalgan.config import load_sweep as load
from fetalgan.sweep.space import concurrency, encoded_keys, trial_config

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))


def test_the_documented_sweeps_exist():
    names = {p.stem for p in SWEEPS}
    assert {"demo", "smoke", "dcgan_lr", "paper_grid", "resolution"} <= names


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_file_is_valid(path):
    cfg = load(path)
    assert cfg.name == path.stem  # the MLflow experiment is named after the file
    for key, dist in cfg.space.items():  # every listed value makes a valid trial config
        ((kind, values),) = dist.items()
        if kind in ("choice", "grid"):
            for value in values:
                sampled = {key: value}
                trial_config(to_dict(cfg.base), sampled, [])


def test_paper_grid_yields_the_studys_twenty_sets():
    cfg = load(Path(SWEEPS[0]).parent / "paper_grid.yaml")
    sizes = cfg.space["data.size"]["grid"]
    evaluated = [e for e in range(cfg.base.eval_every, cfg.base.epochs + 1, cfg.base.eval_every)]
    assert sorted(sizes) == [100, 300, 500, 800, 999]
    assert {300, 500, 800, 1000} <= set(evaluated)
    assert len(sizes) * len(cfg.checkpoint_epochs) == 20


def write(tmp_path, data: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def base_sweep(**fields) -> dict:
    data = {"name": "t", "base": {"resolution": 32, "epochs": 4, "eval_every": 2}}
    data.update(fields)
    return data


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            {"search": {"kind": "optuna"}, "space": {"data.size": {"grid": [10, 20]}}},
            "space.data.size.grid: grid values need search.kind grid or random",
        ),
        (
            {"space": {"epochs": {"uniform": [2, 8]}}},
            "space.epochs.uniform: epochs is an integer key",
        ),
        ({"space": {"model": {"uniform": [0, 1]}}}, "space.model.uniform: model is not numeric"),
        (
            {"search": {"kind": "grid"}, "space": {"resolution": {"grid": [64, 100]}}},
            "space.resolution.grid[1]: resolution",
        ),
        ({"metric": "accuracy"}, "metric: unknown 'accuracy'"),
        (
            {"metric": "kid_mean", "base": {"eval_metrics": ["fid"]}},
            "needs 'kid' in base.eval_metrics",
        ),
        (
            {"scheduler": {"kind": "asha", "grace_period": 9}},
            "scheduler.grace_period: 9 is beyond max_t 4",
        ),
        ({"checkpoint_epochs": [3]}, "checkpoint_epochs[0]: 3 is not an evaluation epoch"),
    ],
)
def test_sweep_errors_name_the_key(tmp_path, fields, message):
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, base_sweep(**fields)))
    assert message in str(err.value)
    assert str(tmp_path / "sweep.yaml") in str(err.value)


def test_overrides_apply_to_base_of_a_file_and_an_object(tmp_path):
    path = write(tmp_path, base_sweep())
    assert load(path, ["lr_g=1e-3", "data.size=12"]).base.lr_g == 1e-3
    cfg = load(SweepConfig(base=TrainConfig(resolution=32)), ["data.size=12"])
    assert cfg.base.data.size == 12


def test_list_values_travel_as_json_and_come_back():
    """Search libraries take scalar categories only: a choice of betas is encoded and decoded."""
    cfg = load(SweepConfig(space={"betas": {"choice": [[0.5, 0.999], [0.9, 0.99]]}}))
    encoded = encoded_keys(cfg)
    assert encoded == ["betas"]
    base = to_dict(cfg.base)
    assert trial_config(base, {"betas": "[0.9, 0.99]"}, encoded).betas == [0.9, 0.99]
    assert base["betas"] == [0.5, 0.999]  # the shared base is not changed by a trial


def test_unreachable_tracking_server_fails_before_ray_starts(tmp_path):
    import ray

    from fetalgan.sweep import run_sweep

    if ray.is_initialized():  # left by an earlier test module: this test needs none
        ray.shutdown()
    path = write(tmp_path, base_sweep())
    with pytest.raises(ValueError, match="not reachable"):
        run_sweep(path, storage=tmp_path / "rr", tracking_uri="http://127.0.0.1:9")
    assert not ray.is_initialized()
    assert not (tmp_path / "rr").exists()


def test_expected_trials_counts_grid_points_times_samples(tmp_path):
    """A sweep stopped between two trials is recognised by counting the trials it ran."""
    from fetalgan.config import SearchConfig, SweepConfig
    from fetalgan.sweep import expected_trials

    cfg = SweepConfig(
        num_samples=2,
        space={
            "lr_g": {"grid": [1e-4, 1e-3]},
            "data.size": {"grid": [5, 6, 7]},
            "lr_d": {"uniform": [1e-4, 1e-3]},
        },
    )
    assert expected_trials(cfg) == 12
    assert expected_trials(SweepConfig(num_samples=5)) == 5
    # search.kind grid expands a choice as well (space.build_param_space)
    choice = {"betas": {"choice": [[0.5, 0.999], [0.9, 0.999]]}, "data.size": {"grid": [16, 24]}}
    assert expected_trials(SweepConfig(space=choice)) == 2
    assert expected_trials(SweepConfig(space=choice, search=SearchConfig(kind="grid"))) == 4


def test_set_reaches_sweep_keys_and_base_keys(tmp_path):
    """--set max_concurrent=16 --set num_samples=64 --set scheduler.max_t=50 (sweep keys), and
    bare or base.-prefixed training keys, through the same strict checks."""
    path = write(tmp_path, base_sweep(base={"resolution": 32, "epochs": 60, "eval_every": 2}))
    cfg = load(
        path,
        [
            "max_concurrent=16",
            "num_samples=64",
            "scheduler.max_t=50",
            "lr_g=1e-3",
            "base.data.size=12",
            "search.seed=7",
        ],
    )
    assert (cfg.max_concurrent, cfg.num_samples, cfg.scheduler.max_t) == (16, 64, 50)
    assert (cfg.base.lr_g, cfg.base.data.size, cfg.search.seed) == (1e-3, 12, 7)
    assert load(path, ["max_concurrent=auto"]).max_concurrent == "auto"
    for bad, message in [
        ("max_concurrent=0", "max_concurrent: must be > 0"),
        ("max_concurrent=lots", "max_concurrent: expected a positive integer or auto"),
        ("scheduler.max_tt=5", "scheduler.max_tt: unknown key"),
        ("num_samples=many", "num_samples: expected an integer"),
        ("lr_gg=1", "base.lr_gg: unknown key"),
    ]:
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            load(path, [bad])


@pytest.mark.parametrize(
    "resources, workers, cluster, expected",
    [
        ({"cpu": 1, "gpu": 0}, 1, {"CPU": 8.0}, 8),
        ({"cpu": 4, "gpu": 1}, 1, {"CPU": 64.0, "GPU": 16.0}, 16),  # 4 nodes x 4 GPUs
        ({"cpu": 4, "gpu": 1}, 1, {"CPU": 32.0, "GPU": 16.0}, 8),  # CPUs are the limit
        ({"cpu": 1, "gpu": 0.25}, 1, {"CPU": 64.0, "GPU": 2.0}, 8),  # fractional GPUs pack
        ({"cpu": 2, "gpu": 0}, 2, {"CPU": 8.0}, 2),  # data-parallel: per worker x workers
        ({"cpu": 4, "gpu": 1}, 1, {"CPU": 2.0}, 1),  # never below one
    ],
)
def test_max_concurrent_auto_fills_the_cluster(resources, workers, cluster, expected):
    from fetalgan.config import ResourcesConfig

    cfg = load(
        SweepConfig(
            max_concurrent="auto",
            resources=ResourcesConfig(**resources),
            workers_per_trial=workers,
        )
    )
    assert concurrency(cfg, cluster) == expected
    assert concurrency(load(SweepConfig(max_concurrent=3)), cluster) == 3


def test_empty_ray_address_counts_as_unset(monkeypatch):
    from fetalgan.sweep.cluster import ray_address

    for empty in ("", "  "):
        monkeypatch.setenv("RAY_ADDRESS", empty)
        assert ray_address() is None
    monkeypatch.delenv("RAY_ADDRESS")
    assert ray_address() is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert ray_address() == "10.0.0.1:6379"


def test_demo_sweep_trains_its_promising_trials_long_enough_on_cheap_evaluations():
    """The demo's calibration (DCGAN64, 256 phantoms, batch 32, lr 4e-4: fan and skull ring
    after 40-60 epochs, measured at FID64 0.04-0.5 at epoch 40): ASHA lets the promising trials reach that, its rungs fall on
    evaluations, evaluations are cheap, and the reference is held out of training."""
    from fetalgan.config import reference_data
    from fetalgan.data.datasets import subset_order

    cfg = load(Path(__file__).resolve().parents[1] / "sweeps" / "demo.yaml")
    base, asha = cfg.base, cfg.scheduler
    assert (base.model, base.resolution, base.data.size, base.batch_size) == ("dcgan", 64, 256, 32)
    assert asha.kind == "asha" and cfg.search.kind == "optuna"
    assert asha.max_t == base.epochs >= 50
    rung, rungs = asha.grace_period, []
    while rung < asha.max_t:
        rungs.append(rung)
        rung = round(rung * asha.reduction_factor)
    assert len(rungs) >= 2 and all(r % base.eval_every == 0 for r in rungs)  # ASHA cuts
    for key in ("lr_g", "lr_d"):
        low, high = cfg.space[key]["loguniform"]
        assert low <= 4e-4 <= high
    assert base.fid_dims == 64 and base.eval_n <= 64  # a cheap evaluation
    assert base.epochs // base.eval_every <= 8
    trial = trial_config(to_dict(base), {"lr_g": 4e-4, "lr_d": 4e-4})

    def chosen(data, seed):
        order = subset_order(data.phantom_n, data.size, seed, order=data.order, skip=data.skip)
        return set(order[: data.size or len(order)].tolist())

    training = chosen(trial.data, trial.seed)
    reference = chosen(reference_data(trial), trial.eval_reference.seed)
    assert len(training) == 256 and len(reference) == 256
    assert not training & reference  # never evaluated against its own training images


@pytest.mark.parametrize(
    ("num_samples", "given", "expected"), [(4, None, 2), (12, None, 3), (100, None, 10), (12, 7, 7)]
)
def test_optuna_starts_guiding_after_a_quarter_of_the_budget(num_samples, given, expected):
    from fetalgan.config import SearchConfig
    from fetalgan.sweep.space import searcher, startup_trials

    cfg = SweepConfig(num_samples=num_samples, search=SearchConfig(startup_trials=given))
    assert startup_trials(cfg) == expected
    tpe = searcher(cfg, max_concurrent=2).searcher._sampler  # ConcurrencyLimiter -> OptunaSearch
    assert tpe._n_startup_trials == expected


@pytest.mark.parametrize(("sampler", "expected"), [("tpe", "TPESampler"), ("gp", "GPSampler")])
def test_search_sampler_picks_optunas_sampler_with_the_seed_and_startup(sampler, expected):
    from fetalgan.config import SearchConfig
    from fetalgan.sweep.space import searcher

    cfg = SweepConfig(num_samples=12, search=SearchConfig(seed=5, sampler=sampler))
    built = searcher(cfg, max_concurrent=2).searcher._sampler
    assert type(built).__name__ == expected
    assert built._n_startup_trials == 3
    # seeded: two searchers propose the same first trial
    import optuna

    first = [
        optuna.create_study(sampler=searcher(cfg, 2).searcher._sampler)
        .ask()
        .suggest_float("lr", 1e-5, 1e-2, log=True)
        for _ in range(2)
    ]
    assert first[0] == first[1]


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ("{kind: optuna, startup_trials: 0}", r"search\.startup_trials: must be > 0"),
        ("{kind: random, startup_trials: 3}", r"startup_trials: only Optuna's .* is random"),
        ("{kind: optuna, sampler: cmaes}", r"search\.sampler: .*cmaes.*tpe, gp"),
        ("{kind: random, sampler: gp}", r"search\.sampler: gp is one of Optuna's .* is random"),
    ],
)
def test_startup_trials_and_sampler_are_checked_and_for_optuna_only(tmp_path, search, message):
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\nsearch: {search}\n")
    with pytest.raises(ConfigError, match=message):
        load(path)


def test_rank_by_names_the_key_asha_and_the_search_compare(tmp_path):
    from fetalgan.sweep.space import tune_metric

    assert tune_metric(SweepConfig(metric="fid")) == "fid"  # default: the latest value
    assert tune_metric(SweepConfig(metric="fid", rank_by="best")) == "best_fid"
    assert tune_metric(SweepConfig(metric="psnr", mode="max", rank_by="best")) == "best_psnr"
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nrank_by: lowest\n")
    with pytest.raises(ConfigError, match=r"rank_by: .*lowest.*last, best"):
        load(path)


class _Trial:
    """What Tune's ASHA reads of a trial: its id."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


@pytest.mark.parametrize(("rank_by", "decision"), [("last", "STOP"), ("best", "CONTINUE")])
def test_asha_compares_by_rank_by(rank_by, decision):
    """Real ASHA (Ray's), told the key as Tune tells it: trial a was best of all at epoch 1
    and oscillated up at the epoch-2 rung; ranked by its latest value it is cut there, ranked
    by its best so far (what its best.pt holds) it goes on."""
    from ray.tune.schedulers import TrialScheduler

    from fetalgan.config import SchedulerConfig
    from fetalgan.sweep.space import scheduler, tune_metric

    cfg = SweepConfig(
        rank_by=rank_by,
        scheduler=SchedulerConfig(kind="asha", max_t=8, grace_period=2, reduction_factor=2),
    )
    asha = scheduler(cfg)
    assert asha.set_search_properties(tune_metric(cfg), cfg.mode)
    a, b = _Trial("a"), _Trial("b")
    for trial in (a, b):
        asha.on_trial_add(None, trial)

    def report(trial, epoch, fid, best):
        return asha.on_trial_result(None, trial, {"epoch": epoch, "fid": fid, "best_fid": best})

    assert report(b, 1, 1.0, 1.0) == TrialScheduler.CONTINUE
    assert report(b, 2, 1.0, 1.0) == TrialScheduler.CONTINUE  # first at the rung
    assert report(a, 1, 0.2, 0.2) == TrialScheduler.CONTINUE
    assert report(a, 2, 1.5, 0.2) == getattr(TrialScheduler, decision)


def test_every_generator_sweep_has_a_final_selection():
    """What `fetalgan best` hands back is chosen on images the search never saw, and scored
    on others: every shipped sweep of a generator has a select section (translators have no
    sampler to re-score)."""
    from fetalgan.models import GENERATORS

    for path in sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml")):
        cfg = load(path)
        if cfg.base.model in GENERATORS:
            assert cfg.select is not None, f"{path.name}: no select section"
            assert cfg.select.test_reference != cfg.select.reference, path.name
