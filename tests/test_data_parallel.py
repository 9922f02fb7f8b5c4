"""train() under torch.distributed on two CPU processes (gloo), without Ray: the shards give
every rank the same number of steps (an uneven data size used to leave one rank waiting in a
collective the other never reached), each rank draws its own random numbers, and a resume
continues every rank's stream exactly. The same runs through Ray Train are in test_sweep.py."""

from __future__ import annotations

import os
import pickle
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny import tiny_train_config

from fetalgan.checkpoint import load_checkpoint
from fetalgan.config import TrainConfig, with_overrides

WORLD = 2


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    # 99 images on 2 ranks: 49 + 50 without equal shards
    defaults = {"data.size": 99, "data.phantom_n": 99, "batch_size": 16, "epochs": 1}
    return tiny_train_config(tmp_path / "cache", **(defaults | {"eval_n": 8} | overrides))


def _rank(rank: int, port: int, job: dict, out_dir: str) -> None:
    """One rank: join the gloo group, record the batches and latents of its steps, train."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    from fetalgan.models.dcgan import model as dcgan
    from fetalgan.train import train

    steps = []
    real_step = dcgan.train_step

    def recording_step(networks, optimizers, real, cfg, ctx):
        state = torch.get_rng_state()
        first_latent = torch.randn(real.shape[0], cfg.nz, 1, 1)  # what the step draws first
        torch.set_rng_state(state)
        steps.append({"real": real[:, 0, 16, :].clone(), "z": first_latent})
        return real_step(networks, optimizers, real, cfg, ctx)

    dcgan.train_step = recording_step
    try:
        train(job["cfg"], run_dir=job["run_dir"], resume=job.get("resume"), progress=False)
        dist.barrier()  # both ranks done before either tears the group down (gloo aborted)
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(steps, f)


def run_two_ranks(tmp_path, name: str, **job) -> list[list[dict]]:
    """``train(job["cfg"])`` on two gloo ranks; each rank's recorded steps."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / name
    out.mkdir()
    job["run_dir"] = str(tmp_path / name / "run")
    mp.spawn(_rank, args=(port, job, str(out)), nprocs=WORLD, join=True)
    return [pickle.loads((out / f"rank{r}.pkl").read_bytes()) for r in range(WORLD)]


def test_uneven_data_finishes_with_equal_steps_and_per_rank_streams(tmp_path):
    """data.size 99, batch 16, 2 ranks: each rank takes 3 steps (its 49 images; the 99th sits
    the epoch out); the ranks' batches are disjoint and their latents differ."""
    steps = run_two_ranks(tmp_path, "uneven", cfg=tiny_config(tmp_path, epochs=2))
    assert [len(s) for s in steps] == [6, 6]  # 3 steps per epoch on both ranks
    for a, b in zip(steps[0], steps[1], strict=True):
        assert a["real"].shape == b["real"].shape
        assert not torch.equal(a["real"], b["real"])  # each rank its own shard
        assert not torch.equal(a["z"], b["z"])  # each rank its own latents
    checkpoint = load_checkpoint(tmp_path / "uneven" / "run" / "checkpoints" / "last.pt")
    assert len(checkpoint["rng_ranks"]) == WORLD
    assert not torch.equal(checkpoint["rng_ranks"][0]["torch"], checkpoint["rng_ranks"][1]["torch"])


@pytest.mark.slow
def test_data_parallel_resume_is_exact(tmp_path):
    """2 epochs straight == 1 epoch, save, resume for the second: every rank draws the same
    latents and the weights come out bit-identical."""
    cfg = tiny_config(tmp_path, epochs=2)
    straight = run_two_ranks(tmp_path, "straight", cfg=cfg)
    run_two_ranks(tmp_path, "first", cfg=with_overrides(cfg, {"epochs": 1}))
    first_ckpt = str(tmp_path / "first" / "run" / "checkpoints" / "last.pt")
    resumed = run_two_ranks(tmp_path, "resumed", cfg=cfg, resume=first_ckpt)
    for rank in range(WORLD):
        second_epoch = straight[rank][3:]
        assert len(second_epoch) == len(resumed[rank]) == 3
        for a, b in zip(second_epoch, resumed[rank], strict=True):
            assert torch.equal(a["z"], b["z"]) and torch.equal(a["real"], b["real"])
    a = load_checkpoint(tmp_path / "straight" / "run" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "run" / "checkpoints" / "last.pt")
    for name in ("generator", "discriminator"):
        for key, tensor in a["networks"][name].items():
            assert torch.equal(tensor, b["networks"][name][key]), (name, key)
