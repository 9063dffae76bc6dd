"""The restricted reader of NVlabs network-snapshot pickles: layouts it must read, payloads it must refuse."""

import hashlib
import io
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from genzoo.checkpoints.nvlabs_pickle import (
    ModuleRecord,
    PersistentRecord,
    iter_records,
    read_nvlabs_pickle,
    record_state_dict,
)
from genzoo.errors import UserError
from tests.nvlabs_fakes import (
    EasyDict,
    FakePersistent,
    module_dict,
    official_globals,
    persistent_module,
    write_snapshot,
)


def _snapshot():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, 3, 3, generator=g)
    base = torch.randn(6, 5, generator=g)
    view = base.t()[1:4]  # a strided view: offset and strides must survive
    conv = persistent_module("Conv2d", dict(in_channels=3, out_channels=4, kernel=3),
                             params=dict(weight=w, bias=torch.randn(4, generator=g).half()),
                             buffers=dict(resample_filter=torch.tensor([[1.0, 1.0]])), up=False)
    block = persistent_module("UNetBlock", dict(in_channels=3, out_channels=4, emb_channels=8),
                              params=dict(extra=view), modules=dict(conv0=conv), dropout=0.1)
    net = persistent_module("SongUNet", dict(img_resolution=8, img_channels=3, label_dim=0),
                            buffers=dict(count=torch.tensor([3], dtype=torch.int64)),
                            modules=dict(enc=module_dict({"8x8_block0": block})))
    precond = persistent_module("EDMPrecond", dict(img_resolution=8, img_channels=3, label_dim=0,
                                                   use_fp16=False, sigma_data=0.5,
                                                   model_type="SongUNet", channel_mult=[1, 2]),
                                modules=dict(model=net), sigma_data=0.5, sigma_min=0.0,
                                sigma_max=float("inf"))
    loss = FakePersistent("EDMLoss", dict(P_mean=-1.2, P_std=1.2, sigma_data=0.5))
    data = dict(ema=precond, loss_fn=loss, augment_pipe=None,
                dataset_kwargs=EasyDict(class_name="training.dataset.ImageFolderDataset", resolution=8,
                                        max_size=np.int64(50000), mean=np.float32(0.5),
                                        order=np.arange(6, dtype=np.int32).reshape(2, 3)))
    expected = {
        "model.count": torch.tensor([3]),
        "model.enc.8x8_block0.extra": view,
        "model.enc.8x8_block0.conv0.weight": w,
        "model.enc.8x8_block0.conv0.bias": conv.state["_parameters"]["bias"].data,
        "model.enc.8x8_block0.conv0.resample_filter": torch.tensor([[1.0, 1.0]]),
    }
    return data, expected


@pytest.mark.parametrize("protocol", [None, 2])  # the default (4 or 5), and 2: sets and bytes as calls
def test_reads_records_tensors_and_plain_data(tmp_path, protocol):
    data, expected = _snapshot()
    out = read_nvlabs_pickle(write_snapshot(tmp_path / "net.pkl", data, protocol))
    ema = out["ema"]
    assert isinstance(ema, PersistentRecord) and ema.class_name == "EDMPrecond" and ema.version == 6
    assert ema.init_kwargs["channel_mult"] == [1, 2] and ema.init_kwargs["model_type"] == "SongUNet"
    assert ema.attributes == dict(sigma_data=0.5, sigma_min=0.0, sigma_max=float("inf"))
    assert ema.module_src_sha256 == hashlib.sha256(data["ema"].module_src.encode()).hexdigest()
    enc = ema.modules["model"].modules["enc"]
    assert isinstance(enc, ModuleRecord) and enc.type_name == "torch.nn.modules.container.ModuleDict"
    assert enc.modules["8x8_block0"].attributes == {"dropout": 0.1}
    state = record_state_dict(ema)
    assert list(state) == list(expected)
    for name, tensor in expected.items():
        assert state[name].dtype == tensor.dtype and state[name].shape == tensor.shape
        assert torch.equal(state[name], tensor), name
    names = [name for name, _ in iter_records(ema)]
    assert names == ["", "model", "model.enc", "model.enc.8x8_block0", "model.enc.8x8_block0.conv0"]
    loss = out["loss_fn"]
    assert not loss.is_module and loss.attributes == dict(P_mean=-1.2, P_std=1.2, sigma_data=0.5)
    assert out["augment_pipe"] is None
    kwargs = out["dataset_kwargs"]
    assert type(kwargs) is dict and kwargs["resolution"] == 8
    assert kwargs["max_size"] == 50000 and isinstance(kwargs["mean"], np.float32)
    assert np.array_equal(kwargs["order"], np.arange(6, dtype=np.int32).reshape(2, 3))


def test_numpy_object_arrays_are_refused(tmp_path):
    data = dict(ema=persistent_module("Net"), extra=np.array([1, "a"], dtype=object))
    _one_line_error(write_snapshot(tmp_path / "obj.pkl", data), "numpy object")


def test_views_of_one_storage_and_dtype_globals(tmp_path):
    base = torch.arange(12, dtype=torch.float64)
    a, b = base[:6].reshape(2, 3), base[6:]
    net = persistent_module("Net", params=dict(a=a, b=b), dtype=torch.float16)
    out = read_nvlabs_pickle(write_snapshot(tmp_path / "net.pkl", dict(ema=net)))["ema"]
    assert torch.equal(out.parameters["a"], a) and torch.equal(out.parameters["b"], b)
    assert out.attributes["dtype"] is torch.float16


class _WritesFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (exec, (f"open({str(self.target)!r}, 'w').write('pwned')",))


class _RunsShell:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _one_line_error(path, *needles):
    with pytest.raises(UserError) as info:
        read_nvlabs_pickle(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize("payload, name", [(_WritesFile, "builtins.exec"), (_RunsShell, "system")])
def test_reduce_payload_is_refused_and_never_runs(tmp_path, payload, name):
    target = tmp_path / "pwned.txt"
    data = dict(augment_pipe=payload(target), ema=persistent_module("Net", params=dict(w=torch.ones(2))))
    path = write_snapshot(tmp_path / "evil.pkl", data)
    _one_line_error(path, name, "not on the allow-list")
    assert not target.exists()
    if payload is _WritesFile:  # the control: plain pickle would have run it
        with official_globals(), pytest.raises(AssertionError, match="must not be called"):
            pickle.loads(path.read_bytes())
        assert target.read_text() == "pwned"


def test_payload_inside_a_persistent_state_is_refused(tmp_path):
    target = tmp_path / "pwned.txt"
    net = persistent_module("Net", params=dict(w=torch.ones(2)), hook=_WritesFile(target))
    _one_line_error(write_snapshot(tmp_path / "evil.pkl", dict(ema=net)), "builtins.exec")
    assert not target.exists()


def test_module_source_is_never_executed(tmp_path):
    target = tmp_path / "pwned.txt"
    source = f"open({str(target)!r}, 'w').write('pwned')\nclass Net:\n    pass\n"
    net = FakePersistent("Net", {"_parameters": {}, "_modules": {}}, module_src=source)
    out = read_nvlabs_pickle(write_snapshot(tmp_path / "src.pkl", dict(ema=net)))
    assert not target.exists()
    assert out["ema"].class_name == "Net"
    assert out["ema"].module_src_sha256 == hashlib.sha256(source.encode()).hexdigest()
    exec(compile(source, "control", "exec"), {})  # the control: running the source writes the file
    assert target.exists()


def test_a_storage_that_is_not_weights_only_is_refused(tmp_path):
    target = tmp_path / "pwned.txt"
    buf = io.BytesIO()
    torch.save(_WritesFile(target), buf, _use_new_zipfile_serialization=False)

    class BadTensor:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (buf.getvalue(),))

    net = persistent_module("Net", params=dict(w=torch.ones(2)), extra=BadTensor())
    _one_line_error(write_snapshot(tmp_path / "evil.pkl", dict(ema=net)), "weights-only")
    assert not target.exists()


def test_unknown_persistent_type_and_persistent_ids(tmp_path):
    net = persistent_module("Net")
    original = net.__reduce__

    def reduce_function_type():
        fn, (meta,) = original()
        return fn, (dict(meta, type="function"),)

    net.__reduce__ = reduce_function_type
    _one_line_error(write_snapshot(tmp_path / "fn.pkl", dict(ema=net)), "'function'")

    class WithPid(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage" if isinstance(obj, torch.Tensor) else None

    path = tmp_path / "pid.pkl"
    with open(path, "wb") as handle:
        WithPid(handle).dump(dict(ema=torch.ones(1)))
    _one_line_error(path, "persistent id")


def test_files_that_are_not_snapshots(tmp_path):
    _one_line_error(tmp_path / "missing.pkl", "no such file")
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle at all")
    _one_line_error(garbage, "not a readable network-snapshot pickle")
    truncated = tmp_path / "truncated.pkl"
    data, _ = _snapshot()
    truncated.write_bytes(write_snapshot(tmp_path / "full.pkl", data).read_bytes()[:200])
    _one_line_error(truncated)
    listed = tmp_path / "list.pkl"
    listed.write_bytes(pickle.dumps([1, 2]))
    _one_line_error(listed, "expected a network snapshot")


class _TensorRecord:
    """A tensor record as torch writes it, with a chosen (size, stride, offset) over a 4-element storage."""

    def __init__(self, size, stride, offset):
        self.args = size, stride, offset

    def __reduce__(self):
        size, stride, offset = self.args
        return (torch._utils._rebuild_tensor_v2,
                (torch.ones(4)._typed_storage(), offset, size, stride, False, OrderedDict()))


@pytest.mark.parametrize("size, stride, offset", [((100,), (1,), 0), ((2,), (1,), 3), ((2,), (-1,), 1),
                                                  ((2,), (1,), -1), ((2, 2), (1,), 0)])
def test_tensor_views_outside_their_storage_are_refused(tmp_path, size, stride, offset):
    data = dict(ema=persistent_module("Net"), extra=_TensorRecord(size, stride, offset))
    _one_line_error(write_snapshot(tmp_path / "view.pkl", data), "tensor")


def test_a_view_ending_at_the_storage_end_is_read(tmp_path):
    data = dict(ema=persistent_module("Net"), extra=_TensorRecord((2,), (1,), 2))
    out = read_nvlabs_pickle(write_snapshot(tmp_path / "view.pkl", data))
    assert torch.equal(out["extra"], torch.ones(2))
