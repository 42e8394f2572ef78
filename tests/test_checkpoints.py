"""Checkpoints are data, not code: resuming never unpickles, and a checkpoint is written atomically."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from agents.sb3 import build_agent, resume_from_checkpoint, save_checkpoint
from envs.campaign import CampaignConfig
from envs.true_world import TrueWorld
from envs.vector_env import CampaignVectorEnv

N = 8


def _model(algo: str = "ppo"):
    env = CampaignVectorEnv(TrueWorld(n_users=N), CampaignConfig(invalid_action="penalize"))
    params = {"n_steps": 16, "batch_size": 32} if algo == "ppo" else {"learning_starts": 8, "buffer_size": 100}
    return build_agent(algo, env, params, [16], 0, None)


class _Payload:
    """Unpickling this runs code: it writes a file (what a hostile checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def _hostile(checkpoint: Path, marker: Path, out: Path) -> Path:
    """A copy of ``checkpoint`` whose ``data`` carries a pickled payload where SB3 keeps its
    serialized schedules (``lr_schedule``), as in the reported exploit."""
    with zipfile.ZipFile(checkpoint) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            content = src.read(name)
            if name == "data":
                data = json.loads(content)
                data["lr_schedule"] = {":type:": "<class 'function'>",
                                       ":serialized:": base64.b64encode(pickle.dumps(_Payload(marker))).decode()}
                content = json.dumps(data).encode()
            dst.writestr(name, content)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model = _model()
    model.learn(128)
    path = save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "ppo_128_steps.zip")
    return model, path


def test_resume_restores_weights_and_step_count(trained):
    model, path = trained
    resumed = resume_from_checkpoint(_model(), path)
    assert resumed.num_timesteps == model.num_timesteps > 0
    for (k, a), b in zip(model.policy.state_dict().items(), resumed.policy.state_dict().values(), strict=True):
        assert np.array_equal(a.numpy(), b.numpy()), k


def test_a_hostile_checkpoint_runs_no_code(trained, tmp_path):
    _, path = trained
    marker = tmp_path / "pwned.txt"
    hostile = _hostile(path, marker, tmp_path / "hostile.zip")
    # the payload is live: a plain unpickle of the entry would run it
    entry = json.loads(zipfile.ZipFile(hostile).read("data"))["lr_schedule"][":serialized:"]
    pickle.loads(base64.b64decode(entry))
    assert marker.exists()
    marker.unlink()
    resume_from_checkpoint(_model(), hostile)  # our resume: weights only
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "random_bytes", "empty", "no_policy"])
def test_damaged_checkpoints_get_one_line_errors(trained, tmp_path, damage):
    _, path = trained
    bad = tmp_path / f"{damage}.zip"
    raw = path.read_bytes()
    if damage == "truncated":
        bad.write_bytes(raw[: len(raw) // 2])
    elif damage == "random_bytes":
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "empty":
        bad.write_bytes(b"")
    else:
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
            for name in src.namelist():
                if name != "policy.pth":
                    dst.writestr(name, src.read(name))
    with pytest.raises(ValueError, match="agent.resume_from") as err:
        resume_from_checkpoint(_model(), bad)
    assert "\n" not in str(err.value)


def test_a_checkpoint_of_another_algorithm_is_refused(tmp_path):
    dqn = _model("dqn")
    path = save_checkpoint(dqn, tmp_path / "dqn.zip")
    with pytest.raises(ValueError, match="does not fit this agent"):
        resume_from_checkpoint(_model("ppo"), path)


def test_a_failed_checkpoint_write_keeps_the_previous_one(trained, tmp_path, monkeypatch):
    """A crash in the middle of writing (here: the zip writer raising after its first entry)
    leaves the previous checkpoint byte for byte, and no partial or temporary file."""
    model, path = trained
    target = tmp_path / "ppo_final.zip"
    save_checkpoint(model, target)
    before = target.read_bytes()
    real = zipfile.ZipFile.writestr
    calls = {"n": 0}

    def dies_midway(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt("killed while writing the checkpoint")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, target)
    assert calls["n"] > 1  # the write really started
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ppo_final.zip"]
