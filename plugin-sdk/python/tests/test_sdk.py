"""The SDK's types, the build command's checks, and the one-source-of-truth WIT."""

import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from infergate_sdk import (BadRequest, DType, Internal, Outputs, Prepared, Request, Response,
                           Tensor, TensorError, build)

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("dtype,np_dtype", [
    ("f16", np.float16), ("f32", np.float32), ("f64", np.float64), ("i8", np.int8),
    ("i16", np.int16), ("i32", np.int32), ("i64", np.int64), ("u8", np.uint8),
    ("u16", np.uint16), ("u32", np.uint32), ("u64", np.uint64), ("bool", np.bool_)])
def test_tensor_bytes_are_numpys_little_endian_bytes(dtype, np_dtype):
    values = [[0, 1, 2], [3, 4, 5]] if dtype != "bool" else [[True, False, True], [False, True, True]]
    t = Tensor.from_list(values, dtype)
    assert t.shape == (2, 3) and t.dtype is DType.of(dtype)
    assert t.data == np.array(values, np_dtype).astype(np.dtype(np_dtype).newbyteorder("<")).tobytes()
    assert t.to_list() == np.array(values, np_dtype).tolist()
    assert Tensor.from_bytes(t.data, (6,), dtype).values() == np.array(values, np_dtype).ravel().tolist()


def test_bf16_rounds_to_nearest_even_and_reads_back():
    t = Tensor.bf16([1.0, 3.140625, 1.00390625, -2.5])  # 1 + 2^-8 ties to even → 1.0
    assert struct.unpack("<4H", t.data) == (0x3F80, 0x4049, 0x3F80, 0xC020)
    assert t.values() == [1.0, 3.140625, 1.0, -2.5]


def test_struct_packed_data_and_reshape():
    t = Tensor.from_bytes(struct.pack("<4f", 0.5, 1.5, 2.5, 3.5), (1, 4), "f32")
    assert t.reshape(2, -1).to_list() == [[0.5, 1.5], [2.5, 3.5]]
    assert t.reshape((4,)).shape == (4,)
    with pytest.raises(TensorError, match="cannot reshape"):
        t.reshape(3, 2)


def test_inconsistent_tensors_are_refused_with_what_was_expected():
    with pytest.raises(TensorError, match="needs 16 data bytes .4 elements., got 12"):
        Tensor.from_bytes(b"\0" * 12, (2, 2), "f32")
    with pytest.raises(TensorError, match="holds 4 elements, got 3 values"):
        Tensor.f32([1, 2, 3], (2, 2))
    with pytest.raises(TensorError, match="ragged"):
        Tensor.f32([[1, 2], [3]])
    with pytest.raises(TensorError, match="do not fit dtype u8"):
        Tensor.u8([256])
    with pytest.raises(TensorError, match="unknown dtype"):
        Tensor.from_list([1], "f128")
    assert isinstance(TensorError("x"), Internal)  # a 500 unless the plugin says otherwise


def test_strings():
    t = Tensor.from_strings(["a", b"\xff"], (2,))
    assert t.dtype is DType.STR and t.values() == [b"a", b"\xff"] and t.data == b""


def test_request_lookups():
    req = Request("m", b'{"x": 1}', query="k=3&name=a%20b&k=9",
                  headers=[("content-type", "application/json")])
    assert req.query_param("k") == "3" and req.query_param("name") == "a b"
    assert req.query_param("nope") is None
    assert req.header("Content-Type") == "application/json"
    assert req.json() == {"x": 1}
    with pytest.raises(BadRequest, match="not valid JSON"):
        Request("m", b"{").json()
    with pytest.raises(BadRequest, match="not UTF-8"):
        Request("m", b"\xff").body_str()


def test_outputs_name_what_is_missing():
    outputs = Outputs({"scores": Tensor.f32([1.0])})
    assert outputs["scores"].values() == [1.0] and "scores" in outputs
    with pytest.raises(Internal, match=r"no output 'labels' \(it returned: 'scores'\)"):
        outputs["labels"]
    assert outputs.get("labels") is None


def test_prepared_and_response():
    p = Prepared({"x": Tensor.f32([1.0])}, context="ctx").input("y", Tensor.i64([2]))
    assert [n for n, _ in p.inputs] == ["x", "y"] and p.context_bytes == b"ctx"
    with pytest.raises(Internal, match="not a Tensor"):
        p.input("z", [1, 2])
    r = Response.json({"a": [1, 0.1]})
    assert r.body == b'{"a":[1,0.1]}' and r.header_value("Content-Type") == "application/json"
    assert Response.text("hi", 201).status == 201


def test_the_shipped_wit_is_the_gateways_contract():
    shipped = Path(build.WIT_DIR / "plugin.wit").read_bytes()
    assert shipped == (REPO / "plugin-sdk/wit/plugin.wit").read_bytes()


def write(tmp_path: Path, source: str, requirements: str = "") -> Path:
    (tmp_path / "plugin.py").write_text(textwrap.dedent(source))
    if requirements:
        (tmp_path / "requirements.txt").write_text(requirements)
    return tmp_path


def test_the_world_follows_the_functions_defined(tmp_path):
    assert build._world(write(tmp_path, "def preprocess(req): ...\n") / "plugin.py") == "preprocessor"
    assert build._world(write(tmp_path, "def postprocess(o, c): ...\n") / "plugin.py") == "postprocessor"
    both = "def preprocess(req): ...\ndef postprocess(o, c): ...\n"
    assert build._world(write(tmp_path, both) / "plugin.py") == "plugin"
    with pytest.raises(build.BuildError, match="defines neither"):
        build._world(write(tmp_path, "x = 1\n") / "plugin.py")


def test_imports_inside_functions_are_refused_with_the_line(tmp_path):
    src = "def preprocess(req):\n    import json\n    return json\n"
    with pytest.raises(build.BuildError, match=r"plugin.py:2: import inside function preprocess"):
        build._world(write(tmp_path, src) / "plugin.py")


def test_a_c_extension_dependency_is_refused_by_name(tmp_path):
    """numpy's wheel is in the pip cache of every machine that ran the SDK tests' setup."""
    project = write(tmp_path, "def preprocess(req): ...\n", "numpy\n")
    with pytest.raises(build.BuildError) as e:
        build.build(project, quiet=True)
    assert "C extensions, which cannot run inside a WebAssembly plugin" in str(e.value)
    assert "numpy" in str(e.value) and "infergate_sdk.ops" in str(e.value)
    assert not (project / "plugin.wasm").exists()


def test_the_command_line_reports_errors_without_a_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(build.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-m", "infergate_sdk.build", "build", str(tmp_path)],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert done.stderr.startswith("infergate-plugin: ") and "has no plugin.py" in done.stderr
    assert "Traceback" not in done.stderr
