"""The one output rule (genzoo.io.atomic), checkpoint pruning by rename, readers that fall back to the
newest complete checkpoint, and metrics.jsonl on resume (issue #16)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from test_train_toy import ToyDataset, register, toy_config

import genzoo
from genzoo.checkpoints import list_checkpoints, resolve_model_dir
from genzoo.errors import UserError
from genzoo.io import NpzWriter, atomic_folder, atomic_output
from genzoo.io.atomic import MARKER
from genzoo.train.checkpoint import find_resumable, prune_checkpoints
from genzoo.train.engine import train
from genzoo.train.feedback import truncate_metrics


def hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path, error):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(type(error)):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise error
    assert target.read_text() == "old" and hidden(tmp_path) == []
    with atomic_output(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and hidden(tmp_path) == []


def test_temporaries_are_unique_and_keep_the_suffix(tmp_path):
    a, b = atomic_output(tmp_path / "x.png"), atomic_output(tmp_path / "x.png")
    assert a.tmp != b.tmp and a.tmp.suffix == b.tmp.suffix == ".png" and a.tmp.name.startswith(".x.png.")
    a.discard()
    b.discard()


def test_a_dead_process_temporary_is_swept_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".out.npz.{dead}.abc.tmp.npz"
    stale.write_bytes(b"partial")
    mine = tmp_path / f".out.npz.{os.getpid()}.def.tmp.npz"  # a live process's: left alone
    mine.write_bytes(b"in progress")
    with atomic_output(tmp_path / "out.npz") as tmp:
        tmp.write_bytes(b"whole")
    assert not stale.exists() and mine.exists()


def test_npz_writer_discards_on_failure(tmp_path):
    out = tmp_path / "s.npz"
    np.savez(out, arr_0=np.zeros((1, 2, 2, 3), np.uint8))
    before = out.read_bytes()
    with pytest.raises(ValueError):
        with NpzWriter(out) as writer:
            writer.write(np.zeros((2, 4, 4, 3), np.uint8))
            writer.write(np.zeros((2, 5, 5, 3), np.uint8))  # another shape: the writer refuses
    assert out.read_bytes() == before and hidden(tmp_path) == []


def test_folders_genzoo_did_not_write_are_refused_and_its_own_are_replaced(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match="genzoo did not write"):
        atomic_folder(foreign)
    assert (foreign / "thesis.tex").read_text() == "years of work"
    own = tmp_path / "own"
    with atomic_folder(own) as tmp:
        (tmp / "a.txt").write_text("1")
    assert json.loads((own / MARKER).read_text())["files"] == ["a.txt"]
    with atomic_folder(own) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in own.iterdir()) == [MARKER, "b.txt"]
    (own / "added-by-user.txt").write_text("mine")  # now it holds a file genzoo did not write
    with pytest.raises(UserError, match="added-by-user.txt"):
        atomic_folder(own)
    with pytest.raises(UserError, match="is a file"):
        atomic_folder(own / "b.txt")
    assert hidden(tmp_path) == []


def test_merge_moves_new_files_in_and_leaves_the_others(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "keep.txt").write_text("keep")
    with pytest.raises(RuntimeError):
        with atomic_folder(shared, merge=True) as tmp:
            (tmp / "new.png").write_text("half")
            raise RuntimeError
    assert sorted(p.name for p in shared.iterdir()) == ["keep.txt"]
    with atomic_folder(shared, merge=True) as tmp:
        (tmp / "grids").mkdir()
        (tmp / "grids" / "g.png").write_text("g")
    assert (shared / "keep.txt").read_text() == "keep" and (shared / "grids" / "g.png").is_file()
    assert hidden(tmp_path) == []


def test_convert_refuses_a_non_empty_folder_and_deletes_nothing(tmp_path, capsys):
    from genzoo.cli import main

    target = tmp_path / "model"
    target.mkdir()
    (target / "notes.md").write_text("mine")
    assert main(["convert", "--from", "guided-diffusion", str(tmp_path / "x.pt"), str(target)]) == 2
    assert "genzoo did not write" in capsys.readouterr().err
    assert [p.name for p in target.iterdir()] == ["notes.md"]


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture()
def toy_run(tmp_path, monkeypatch):
    register(monkeypatch)
    return train(toy_config(tmp_path / "run", steps=4, checkpoint_every=1, keep_last=0), dataset=ToyDataset())


def test_pruning_renames_first_so_no_half_deleted_checkpoint_is_visible(toy_run, monkeypatch):
    seen = []

    def interrupted_rmtree(path, *args, **kwargs):  # a kill between the rename and the delete
        seen.append(path.name)
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", interrupted_rmtree)
    with pytest.raises(KeyboardInterrupt):
        prune_checkpoints(toy_run, 2)
    assert seen and seen[0].startswith(".checkpoint-000001.")
    visible = [p.name for p in list_checkpoints(toy_run)]
    assert visible == ["checkpoint-000002", "checkpoint-000003", "checkpoint-000004"]
    monkeypatch.undo()
    register(monkeypatch)
    prune_checkpoints(toy_run, 2)
    assert [p.name for p in list_checkpoints(toy_run)] == ["checkpoint-000003", "checkpoint-000004"]


def test_readers_fall_back_to_the_newest_complete_checkpoint(toy_run):
    (toy_run / "checkpoint-000004" / "model.safetensors").unlink()  # vanished while being pruned
    assert resolve_model_dir(toy_run).name == "checkpoint-000003"
    assert genzoo.record_of(genzoo.load(toy_run)).model_dir.name == "checkpoint-000003"
    shutil.rmtree(toy_run / "checkpoint-000004")
    assert genzoo.record_of(genzoo.load(toy_run)).model_dir.name == "checkpoint-000003"


def test_a_non_integer_step_falls_back_to_the_previous_checkpoint(toy_run, monkeypatch):
    state_file = toy_run / "checkpoint-000004" / "state.json"
    state = json.loads(state_file.read_text())
    state["step"] = "four"
    state_file.write_text(json.dumps(state))
    said = []
    assert find_resumable(toy_run, said.append).path.name == "checkpoint-000003"
    assert "'step' must be a non-negative integer" in said[0]
    train(toy_config(toy_run, steps=5, checkpoint_every=1, keep_last=0, resume=True), dataset=ToyDataset())
    assert json.loads((toy_run / "checkpoint-000005" / "state.json").read_text())["step"] == 5


def test_metrics_lines_after_the_resumed_step_are_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 7)) + '{"step": 7, "lo')
    truncate_metrics(path, 4)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4]


def test_a_model_with_nan_weights_is_refused_at_load(toy_run):
    from safetensors.torch import load_file, save_file

    for name in ("model", "ema"):
        file = toy_run / "checkpoint-000004" / f"{name}.safetensors"
        state = load_file(str(file))
        state = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, str(file))
    with pytest.raises(UserError, match="NaN"):
        genzoo.load(toy_run / "checkpoint-000004")
