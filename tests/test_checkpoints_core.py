"""genzoo.checkpoints: atomic model directories, listing/resolving, safe loading, clear mismatch errors."""

from __future__ import annotations

import collections

import pytest
import torch
import torch.nn as nn

from genzoo.checkpoints import (
    OfficialSource,
    get_source,
    list_checkpoints,
    load_official,
    load_safetensors,
    load_state_into,
    load_torch_file,
    read_json,
    read_state_dict,
    register_source,
    resolve_model_dir,
    save_model_dir,
)
from genzoo.errors import UserError


def test_save_model_dir_replaces_atomically_and_cleans_up_on_failure(tmp_path):
    path = tmp_path / "m"
    save_model_dir(path, {"v": 1}, {"model": {"w": torch.ones(2)}})
    assert read_json(path / "config.json") == {"v": 1}

    def fail(_):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        save_model_dir(path, {"v": 2}, {"model": {"w": torch.zeros(2)}}, extra_files={"x.pt": fail})
    assert read_json(path / "config.json") == {"v": 1}  # the old directory is untouched
    assert torch.equal(load_safetensors(path / "model.safetensors")["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary directory left
    save_model_dir(path, {"v": 3}, {"model": {"w": torch.zeros(2)}})
    assert read_json(path / "config.json") == {"v": 3} and sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_list_and_resolve(tmp_path):
    for step in (10, 2, 100):
        save_model_dir(tmp_path / f"checkpoint-{step:06d}", {"family": "x"}, {"model": {"w": torch.ones(1)}})
    (tmp_path / ".checkpoint-000200.tmp").mkdir()  # an interrupted save
    (tmp_path / "checkpoint-abc").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-000002", "checkpoint-000010",
                                                            "checkpoint-000100"]
    assert resolve_model_dir(tmp_path).name == "checkpoint-000100"
    assert resolve_model_dir(tmp_path / "checkpoint-000002").name == "checkpoint-000002"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="expected a genzoo run directory"):
        resolve_model_dir(empty)


def test_corrupt_files_are_named(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(UserError, match="bad.safetensors: corrupt or truncated"):
        load_safetensors(bad)
    (tmp_path / "c.json").write_text("{")
    with pytest.raises(UserError, match="c.json: not valid JSON"):
        read_json(tmp_path / "c.json")


class _Payload:
    pass


def test_torch_files_are_weights_only(tmp_path):
    torch.save({"state_dict": {"a": torch.ones(2)}}, tmp_path / "ok.pt")
    assert torch.equal(read_state_dict(tmp_path / "ok.pt")["a"], torch.ones(2))
    torch.save({"obj": _Payload()}, tmp_path / "code.pt")  # unpickling would need to run our class
    with pytest.raises(UserError, match="code.pt: cannot be read as a weights-only torch file"):
        load_torch_file(tmp_path / "code.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UserError, match="list.pt: expected a state dict"):
        read_state_dict(tmp_path / "list.pt")


def test_load_state_into_lists_missing_unexpected_and_shapes():
    net = nn.Sequential(collections.OrderedDict(a=nn.Linear(2, 3), b=nn.Linear(3, 1)))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state.pop("b.bias")
    state["c.weight"] = torch.zeros(1)
    state["a.weight"] = torch.zeros(4, 2)
    expected = (r"w.pt: does not match the model; missing keys \(1\): b.bias; unexpected keys \(1\): "
                r"c.weight; first shape mismatch: a.weight is \(4, 2\)")
    with pytest.raises(UserError, match=expected):
        load_state_into(net, state, "w.pt")


def test_official_sources_and_presets():
    calls = []
    def load(state, **flags):
        calls.append(flags)
        return nn.Identity()

    register_source(OfficialSource("test-src", load=load, presets={"small": {"ch": 8, "depth": 2}}))
    assert get_source("test-src").name == "test-src"
    load_official("test-src", {"w": torch.ones(1)}, preset="small", depth=3)
    assert calls == [{"ch": 8, "depth": 3}]
    with pytest.raises(UserError, match="unknown preset 'big' for test-src; valid: small"):
        load_official("test-src", {}, preset="big")
    with pytest.raises(UserError, match="--from: unknown checkpoint source 'nope'"):
        get_source("nope")
