"""Population Based Training: the sweep-file rules, exploits that apply the trial's own
hyper-parameters and keep its best honest, the lineage and its exact replay, and a real Ray
Tune PBT run tracked in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from tiny import tiny_train_config

from fetalgan.config import ConfigError, load_sweep
from fetalgan.evaluation import Objective
from fetalgan.sweep import pbt


def pbt_sweep(**fields) -> dict:
    data = {
        "name": "pop",
        "metric": "lbpv_l1",
        "num_samples": 4,
        "max_concurrent": 2,
        "resources": {"cpu": 1},
        "scheduler": {"kind": "pbt", "perturbation_interval": 2},
        "search": {"kind": "random", "seed": 0},
        "base": {"epochs": 6, "eval_every": 1, "eval_metrics": ["lbpv"]},
        "space": {"lr_g": {"loguniform": [1e-4, 3e-3]}, "lr_d": {"loguniform": [1e-4, 3e-3]}},
    }
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = data[key] | value
        else:
            data[key] = value
    return data


def load(tmp_path: Path, data: dict, *overrides: str):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_sweep(path, list(overrides))


# --------------------------------------------------------------------------------------------
# The sweep file
# --------------------------------------------------------------------------------------------


def test_pbt_sweep_rules(tmp_path):
    cfg = load(tmp_path, pbt_sweep())
    assert cfg.scheduler.kind == "pbt" and cfg.scheduler.perturbation_interval == 2
    cases = {
        "search.kind=optuna": "search.kind: optuna generates each trial's configuration",
        "scheduler.perturbation_interval=3": "is not a multiple of base.eval_every",
        "scheduler.grace_period=5": "scheduler.grace_period: belongs to scheduler.kind asha",
        "scheduler.quantile_fraction=0.7": "scheduler.quantile_fraction: must be in",
        "rank_by=best": "rank_by: best never gets worse",
        "workers_per_trial=2": "workers_per_trial: pbt restarts a trial",
    }
    for item, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            load(
                tmp_path, pbt_sweep(), item, *(["base.eval_every=2"] if "interval" in item else [])
            )
    with pytest.raises(ConfigError, match="space.data.size: pbt changes every space key"):
        load(tmp_path, pbt_sweep(space={"data.size": {"choice": [8, 16]}}))
    with pytest.raises(ConfigError, match="space.ngf: pbt changes every space key"):
        load(tmp_path, pbt_sweep(space={"ngf": {"choice": [8, 16]}}))
    with pytest.raises(ConfigError, match="space.betas: pb2 models continuous ranges only"):
        load(
            tmp_path,
            pbt_sweep(scheduler={"kind": "pb2"}, space={"betas": {"choice": [[0.5, 0.999]]}}),
        )
    with pytest.raises(ConfigError, match="scheduler.resample_probability: belongs to"):
        load(tmp_path, pbt_sweep(scheduler={"kind": "pb2", "resample_probability": 0.5}))
    select = {
        "per_trial": 2,
        "reference": {"phantom_seed": 1},
        "test_reference": {"phantom_seed": 2},
    }
    with pytest.raises(ConfigError, match="select.per_trial: 2 with pbt"):
        load(tmp_path, pbt_sweep(select=select))
    # betas as a list PBT shifts through, window fitness, PB2 on continuous ranges: all fine
    load(tmp_path, pbt_sweep(space={"betas": {"choice": [[0.5, 0.999], [0.0, 0.99]]}}))
    load(tmp_path, pbt_sweep(rank_by="window"))
    load(tmp_path, pbt_sweep(scheduler={"kind": "pb2", "synch": True}))


def test_pbt_scheduler_mutates_the_space_within_its_bounds(tmp_path):
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.schedulers.pb2 import PB2

    from fetalgan.sweep.space import clip_to_space, mutations, scheduler

    cfg = load(tmp_path, pbt_sweep(space={
        "lr_g": {"loguniform": [1e-4, 3e-3]},
        "betas": {"choice": [[0.5, 0.999], [0.0, 0.99]]},
    }))  # fmt: skip
    built = scheduler(cfg)
    assert isinstance(built, PopulationBasedTraining) and built._perturbation_interval == 2
    assert mutations(cfg)["betas"] == ["[0.5, 0.999]", "[0.0, 0.99]"]  # as Tune holds them
    explore = clip_to_space(cfg)
    assert explore({"lr_g": 3e-3 * 1.2, "betas": "[0.5, 0.999]"})["lr_g"] == 3e-3
    assert explore({"lr_g": 1e-4 * 0.8})["lr_g"] == 1e-4
    pb2 = scheduler(load(tmp_path, pbt_sweep(scheduler={"kind": "pb2"})))
    assert isinstance(pb2, PB2)
    assert mutations(load(tmp_path, pbt_sweep(scheduler={"kind": "pb2"})))["lr_g"] == [1e-4, 3e-3]


# --------------------------------------------------------------------------------------------
# Exploits inside train(): the trial's hyper-parameters, stream and best
# --------------------------------------------------------------------------------------------


def _donor(tmp_path: Path, **overrides) -> tuple[Path, object]:
    from fetalgan.train import train

    cfg = tiny_train_config(tmp_path / "cache", epochs=2, eval_metrics=["lbpv"], **overrides)
    train(
        cfg,
        run_dir=tmp_path / "donor",
        progress=False,
        objective=Objective("lbpv_l1", "min"),
        extra={"trial_id": "donor"},
    )
    return tmp_path / "donor" / "checkpoints" / "last.pt", cfg


def test_an_exploit_applies_the_trials_own_hyper_parameters_stream_and_best(tmp_path):
    from fetalgan.checkpoint import load_checkpoint
    from fetalgan.train import train

    donor_file, donor_cfg = _donor(tmp_path, lr_g=1e-3, lr_d=1e-3, betas=[0.5, 0.999])
    objective = Objective("lbpv_l1", "min")

    def exploit_as(name: str, best_value, **overrides):
        cfg = tiny_train_config(tmp_path / "cache", epochs=4, eval_metrics=["lbpv"], **overrides)
        record_file, record, exploit = pbt.start(
            tmp_path / "exp", name, cfg, list(overrides), donor_file
        )
        assert exploit is not None and record["exploits"][-1]["donor"] == "donor"
        exploit["best_value"] = best_value

        def report(evaluation):
            pbt.after_evaluation(record_file, record, evaluation, cfg, list(overrides))
            reported.append(evaluation)

        reported = []
        train(
            cfg,
            report=report,
            resume=donor_file,
            run_dir=tmp_path / name,
            progress=False,
            objective=objective,
            extra={"trial_id": name},
            exploit=exploit,
        )
        return load_checkpoint(tmp_path / name / "checkpoints" / "last.pt"), reported

    state, reported = exploit_as("b", None, lr_g=2e-4, lr_d=5e-4, betas=[0.0, 0.99])
    donor_state = load_checkpoint(donor_file)
    # the optimisers run at the trial's config, with the donor's moments
    generator = state["optimizers"]["generator"]["param_groups"][0]
    assert generator["lr"] == 2e-4 and list(generator["betas"]) == [0.0, 0.99]
    assert state["optimizers"]["discriminator"]["param_groups"][0]["lr"] == 5e-4
    assert donor_state["optimizers"]["generator"]["param_groups"][0]["lr"] == 1e-3
    # the run starts at the donor's epoch; the donor's bests are not this run's
    assert [e.epoch for e in reported] == [3, 4]
    assert not any(h["is_best"] for h in state["history"] if h["epoch"] <= 2)
    best_epochs = [h["epoch"] for h in state["history"] if h["is_best"]]
    assert best_epochs and best_epochs[0] == 3  # no own best before: the first evaluation
    best = load_checkpoint(tmp_path / "b" / "checkpoints" / "best.pt")
    assert best["epoch"] == best_epochs[-1]
    assert reported[0].hyper == {"lr_g": 2e-4, "lr_d": 5e-4, "betas": [0.0, 0.99]}
    assert reported[0].metrics()["hp/betas_0"] == 0.0 and reported[0].metrics()["pbt/exploits"] == 1

    # an own best no evaluation beats: no best.pt from this run (it keeps the one it logged)
    _, reported_c = exploit_as("c", -1.0, lr_g=2e-4)
    assert not any(e.is_best for e in reported_c)
    assert not (tmp_path / "c" / "checkpoints" / "best.pt").exists()
    assert reported_c[-1].best_value == -1.0  # best_<metric> stays the trial's own

    # the stream is the trial's own: the same config from the same donor trains otherwise
    state_d, _ = exploit_as("d", None, lr_g=2e-4, lr_d=5e-4, betas=[0.0, 0.99])
    same = all(
        torch.equal(state["networks"]["generator"][k], state_d["networks"]["generator"][k])
        for k in state["networks"]["generator"]
    )
    assert not same


def test_a_restart_from_the_same_donor_records_one_exploit(tmp_path):
    donor_file, cfg = _donor(tmp_path)
    for _ in range(2):  # e.g. a crash before the trial's first own checkpoint
        _, record, exploit = pbt.start(tmp_path / "exp", "b", cfg, ["lr_g"], donor_file)
    assert len(record["exploits"]) == 1 and exploit is not None
    _, record, exploit = pbt.start(tmp_path / "exp", "donor", cfg, ["lr_g"], donor_file)
    assert exploit is None and record["exploits"] == []  # its own state: a plain resume


# --------------------------------------------------------------------------------------------
# Lineage and replay
# --------------------------------------------------------------------------------------------


def test_schedule_follows_donors_back_to_the_root():
    lineage = {"trials": {
        "a": {"trial_id": "a", "initial": {"lr_g": 1.0}, "exploits": []},
        "b": {"trial_id": "b", "initial": {"lr_g": 2.0}, "exploits": [
            {"epoch": 4, "donor": "a", "config": {"lr_g": 1.2}},
        ]},
        "c": {"trial_id": "c", "initial": {"lr_g": 3.0}, "exploits": [
            {"epoch": 2, "donor": "a", "config": {"lr_g": 0.8}},
            {"epoch": 8, "donor": "b", "config": {"lr_g": 0.96}},
        ]},
    }}  # fmt: skip
    assert pbt.schedule_of(lineage, "a") == [{"epoch": 0, "config": {"lr_g": 1.0}}]
    assert [(s["epoch"], s["config"]["lr_g"]) for s in pbt.schedule_of(lineage, "c")] == [
        (0, 1.0),  # b's root: a
        (4, 1.2),  # b took a's state at 4 (c's own exploit from a at 2 was overwritten)
        (8, 0.96),
    ]
    assert pbt.schedule_of(lineage, "c")[1]["stream"] == pbt.stream("b")
    with pytest.raises(ValueError, match="trial x: not in the sweep's PBT lineage"):
        pbt.schedule_of(lineage, "x")


def test_replay_repeats_a_two_segment_pbt_trial_exactly(tmp_path):
    """A donor trains 2 epochs at lr 1e-3; trial b takes its state at epoch 2 with lr 3e-4
    and trains to 4. Replaying b's schedule from scratch as one run gives the same weights,
    bit for bit (CPU, fp32)."""
    from fetalgan.checkpoint import load_checkpoint
    from fetalgan.train import train

    donor_file, _ = _donor(tmp_path, lr_g=1e-3)
    keys = ["lr_g"]
    cfg_b = tiny_train_config(tmp_path / "cache", epochs=4, eval_metrics=["lbpv"], lr_g=3e-4)
    _, _, exploit = pbt.start(tmp_path / "exp", "b", cfg_b, keys, donor_file)
    train(cfg_b, resume=donor_file, run_dir=tmp_path / "b", progress=False,
          objective=Objective("lbpv_l1", "min"), extra={"trial_id": "b"}, exploit=exploit)  # fmt: skip
    donor_cfg = tiny_train_config(tmp_path / "cache", epochs=2, lr_g=1e-3)
    pbt.start(tmp_path / "exp", "donor", donor_cfg, keys, None)  # the donor's own record
    schedule = pbt.schedule_of(pbt.lineage(tmp_path / "exp"), "b")
    assert [(s["epoch"], s["config"]) for s in schedule] == [
        (0, {"lr_g": 1e-3}),
        (2, {"lr_g": 3e-4}),
    ]
    (tmp_path / "schedule.json").write_text(json.dumps(schedule))

    from fetalgan.cli import main

    sweep = tmp_path / "replay.yaml"
    from fetalgan.config import to_dict

    # a base lr_g the schedule overrides from epoch 0 on
    base = to_dict(
        tiny_train_config(tmp_path / "cache", epochs=4, eval_metrics=["lbpv"], lr_g=5e-2)
    )
    sweep.write_text(yaml.safe_dump({"name": "r", "metric": "lbpv_l1", "base": base}))
    out = tmp_path / "replayed"
    assert main(["train", str(sweep), "--replay-schedule", str(tmp_path / "schedule.json"),
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    replayed = load_checkpoint(out / "checkpoints" / "last.pt")
    original = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    for net in ("generator", "discriminator"):
        for key, value in original["networks"][net].items():
            assert torch.equal(value, replayed["networks"][net][key]), (net, key)
    assert replayed["optimizers"]["generator"]["param_groups"][0]["lr"] == 3e-4


# --------------------------------------------------------------------------------------------
# A real Ray Tune PBT run, tracked in MLflow
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pbt", "pb2"])
def test_a_real_pbt_sweep_exploits_tracks_schedules_and_replays(
    tmp_path, ray_instance, capsys, kind
):
    from fetalgan.cli import main
    from fetalgan.sweep import run_sweep
    from fetalgan.tracking import names
    from fetalgan.tracking.queries import pbt_schedule
    from mlflow import MlflowClient

    data = pbt_sweep(
        # synch: the whole population perturbs at every epoch, so exploits happen before the
        # last epoch however the machine's load orders the trials
        scheduler={"kind": kind, "perturbation_interval": 1, "quantile_fraction": 0.5,
                   "synch": True, **({"resample_probability": 1.0} if kind == "pbt" else {})},
        num_samples=4,
    )  # fmt: skip
    data["base"] |= {
        "resolution": 32, "batch_size": 8, "ngf": 8, "ndf": 8, "nz": 16, "eval_n": 16,
        "precision": "fp32", "device": "cpu", "epochs": 5,
        "data": {"kind": "phantom", "size": 24, "phantom_n": 32, "cache_dir": str(tmp_path / "c")},
    }  # fmt: skip
    data["space"] = {"lr_g": {"loguniform": [1e-5, 3e-2]}, "lr_d": {"loguniform": [1e-5, 3e-2]}}
    path = tmp_path / "pop.yaml"
    path.write_text(yaml.safe_dump(data))
    store = f"sqlite:///{tmp_path}/mlruns.db"
    summary = run_sweep(path, storage=tmp_path / "rr", tracking_uri=store, verbose=1)
    assert summary["num_errors"] == 0
    printed = capsys.readouterr().out
    client = MlflowClient(store)
    parent = summary["parent_run_id"]
    lineage_file = client.download_artifacts(parent, names.LINEAGE_ARTIFACT, str(tmp_path))
    lineage = json.loads(Path(lineage_file).read_text())
    trials = lineage["trials"]
    assert len(trials) == 4
    # no trial copies another's state at its last epoch (its last result ends it first)
    late = [(t["trial_id"], x) for t in trials.values() for x in t["exploits"] if x["epoch"] >= 5]
    assert not late, late
    exploited = [t for t in trials.values() if any(x["epoch"] < 5 for x in t["exploits"])]
    assert exploited, f"no trial exploited before the last epoch: {trials}"
    record = exploited[0]
    run = client.get_run(record["run_id"])
    # the schedule in MLflow: hp/<key> at every evaluation, the exploits as a count and a tag
    lr = {m.step: m.value for m in client.get_metric_history(record["run_id"], "hp/lr_g")}
    trained_on = [x for x in record["exploits"] if x["epoch"] < 5]  # evaluated after
    exploit = trained_on[-1]
    told = f"trial {record['trial_id']} copied trial {exploit['donor']}'s state at epoch {exploit['epoch']}"
    assert told in printed, printed
    assert lr[exploit["epoch"] + 1] == pytest.approx(exploit["config"]["lr_g"])
    count = client.get_metric_history(record["run_id"], "pbt/exploits")
    assert max(m.value for m in count) == len(trained_on)
    assert json.loads(run.data.tags[names.EXPLOITS_TAG])[-1]["donor"] == exploit["donor"]
    # every evaluation of every trial is in MLflow, also a recipient's at the epoch it was
    # paused to copy (Tune drops that result's checkpoint; the callback logs it anyway)
    for t in trials.values():
        steps = sorted(m.step for m in client.get_metric_history(t["run_id"], "lbpv_l1"))
        assert steps == [1, 2, 3, 4, 5], (t["trial_id"], steps, t["exploits"])
    # every new value inside the space (PBT's x1.2 is clipped)
    for t in trials.values():
        for x in t["exploits"]:
            assert 1e-5 <= x["config"]["lr_g"] <= 3e-2
    # best is the trial's own: best_<metric> is the lowest lbpv_l1 its run logged
    history = [m.value for m in client.get_metric_history(record["run_id"], "lbpv_l1")]
    assert run.data.metrics["best_lbpv_l1"] == pytest.approx(min(history))
    # the schedule a replay would follow, from MLflow
    schedule = pbt_schedule(record["run_id"], tracking_uri=store)
    assert schedule[-1]["config"] == record["exploits"][-1]["config"]
    assert schedule[0]["epoch"] == 0
    capsys.readouterr()
    out = tmp_path / "replay"
    assert main(["train", str(path), "--replay", record["run_id"], "--tracking-uri", store,
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    assert "replaying a schedule of" in capsys.readouterr().err
    assert (out / "checkpoints" / "last.pt").is_file()
    # fetalgan best says the winner's hyper-parameters changed and how to replay them
    assert main(["best", "pop", "--tracking-uri", store]) == 0
    printed = capsys.readouterr().out
    assert "PBT: at epoch" in printed and "--replay" in printed, printed
    # the report draws the schedules, exploits marked
    assert main(["report", "pop", "--tracking-uri", store, "--out", str(tmp_path / "rep")]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert 'id="schedules"' in html and (tmp_path / "rep" / "schedules.png").is_file()
    # disk: a finished PBT sweep keeps one full state per trial
    for trial_dir in (tmp_path / "rr" / "pop").glob("trial_*"):
        assert len(list(trial_dir.glob("checkpoint_*"))) == 1, trial_dir
