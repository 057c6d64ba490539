"""MediaPipe's hand-landmark network (`hand_landmark_full.tflite`) rebuilt as a PyTorch module, to fine-tune and export.

`load(path)` reads the TFLite flatbuffer through the schema classes that `ai-edge-litert` ships
(`ai_edge_litert.schema_py_generated`): its operators with their options (stride, SAME/VALID padding, dilation, fused
activation, depth multiplier, keep_dims) and its weights, which MediaPipe stores as float16 behind DEQUANTIZE ops
(folded here into float32 parameters; int8 with scales is dequantized the same way). The module keeps only the ops the
requested outputs need: by default the pooled feature `model_1/model/global_average_pooling2d/Mean`, (N, 1152).
Its input is torch's layout, float32 (N, 3, H, W) RGB in [0, 1] (the tflite graph's own input is (1, 224, 224, 3)
NHWC); 4-D tensors run channels-first inside, TF's asymmetric SAME padding is an explicit `F.pad`. On CPU,
`net.to(memory_format=torch.channels_last)` with a channels_last input runs faster (bench/hand_net_torch.py).
Ops: CONV_2D, DEPTHWISE_CONV_2D, ADD, MEAN, FULLY_CONNECTED, LOGISTIC, MAX_POOL_2D (the lite model's), DEQUANTIZE
of constants.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.errors import PipelineError

EMBEDDING = "model_1/model/global_average_pooling2d/Mean"
NHWC_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}  # a 4-D tensor's TFLite axis -> its axis here


def default_path() -> Path:
    """The full hand-landmark model inside the installed MediaPipe wheel (found without importing mediapipe)."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError("the hand network needs MediaPipe: pip install 'signpipe[hands]'")
    return Path(list(spec.submodule_search_locations)[0]) / "modules" / "hand_landmark" / "hand_landmark_full.tflite"


def _activation(code: int):
    """TFLite's fused activation (ActivationFunctionType) as a function."""
    acts = {0: lambda x: x, 1: F.relu, 2: lambda x: x.clamp(-1.0, 1.0), 3: F.relu6, 4: torch.tanh}
    if code not in acts:
        raise PipelineError(f"the tflite graph uses fused activation {code}, which this rebuild does not support")
    return acts[code]


def _same_pad(x: torch.Tensor, kernel: tuple, stride: tuple, dilation: tuple, value: float = 0.0) -> torch.Tensor:
    """TF's SAME padding: output ceil(in / stride), the odd pixel of padding at the bottom and the right."""
    pads = []
    for size, k, s, d in zip(x.shape[2:], kernel, stride, dilation):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return F.pad(x, (left, right, top, bottom), value=value) if top or bottom or left or right else x


class _Conv(nn.Module):
    """CONV_2D or DEPTHWISE_CONV_2D: a bias-carrying nn.Conv2d, TF's padding before it, the fused activation after."""

    def __init__(self, weight: np.ndarray, bias, groups: int, stride, dilation, same: bool, act: int):
        super().__init__()
        out_ch, in_per_group, kh, kw = weight.shape
        self.conv = nn.Conv2d(in_per_group * groups, out_ch, (kh, kw), stride=stride, dilation=dilation,
                              groups=groups, bias=True)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(weight))
            self.conv.bias.copy_(torch.from_numpy(bias) if bias is not None else torch.zeros(out_ch))
        self.same, self.act = same, _activation(act)

    def forward(self, x):
        if self.same:
            x = _same_pad(x, self.conv.kernel_size, self.conv.stride, self.conv.dilation)
        return self.act(self.conv(x))


class _Linear(nn.Module):
    """FULLY_CONNECTED: TFLite's (out, in) weights are nn.Linear's own layout."""

    def __init__(self, weight: np.ndarray, bias, act: int, keep_num_dims: bool):
        super().__init__()
        self.fc = nn.Linear(weight.shape[1], weight.shape[0], bias=True)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(weight))
            self.fc.bias.copy_(torch.from_numpy(bias) if bias is not None else torch.zeros(weight.shape[0]))
        self.act, self.keep_num_dims = _activation(act), keep_num_dims

    def forward(self, x):
        y = self.fc(x if self.keep_num_dims else x.reshape(-1, self.fc.in_features))
        return self.act(y)


class _MaxPool(nn.Module):
    """MAX_POOL_2D: TF's SAME padding never wins the max, so it is padded with -inf."""

    def __init__(self, kernel: tuple, stride: tuple, same: bool, act: int):
        super().__init__()
        self.kernel, self.stride, self.same, self.act = kernel, stride, same, _activation(act)

    def forward(self, x):
        if self.same:
            x = _same_pad(x, self.kernel, self.stride, (1, 1), value=float("-inf"))
        return self.act(F.max_pool2d(x, self.kernel, self.stride))


class _Fn(nn.Module):
    """A parameter-free op (ADD, MEAN, LOGISTIC) as a small module, so the graph is one ModuleList."""

    def __init__(self, kind: str, act: int = 0, axes: tuple = (), keep_dims: bool = False):
        super().__init__()
        self.kind, self.act, self.axes, self.keep_dims = kind, _activation(act), axes, keep_dims

    def forward(self, *xs):
        if self.kind == "ADD":
            return self.act(xs[0] + xs[1])
        if self.kind == "MEAN":
            return xs[0].mean(dim=self.axes, keepdim=self.keep_dims)
        return torch.sigmoid(xs[0])  # LOGISTIC


class HandNet(nn.Module):
    """The tflite graph as a list of torch ops run in file order; `forward` returns the requested tensor(s)."""

    def __init__(self, ops: nn.ModuleList, wiring: list, input_id: int, output_ids: list, names: dict):
        super().__init__()
        self.ops, self.wiring, self.input_id, self.output_ids = ops, wiring, input_id, output_ids
        self.output_names = [names[i] for i in output_ids]

    def forward(self, x: torch.Tensor):
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"HandNet takes float (N, 3, H, W) RGB in [0, 1], got shape {tuple(x.shape)}")
        env = {self.input_id: x}
        for op, (ins, out) in zip(self.ops, self.wiring):
            env[out] = op(*(env[i] for i in ins))
        outs = [env[i] for i in self.output_ids]
        return outs[0] if len(outs) == 1 else tuple(outs)


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as e:
        raise PipelineError("reading a .tflite model needs ai-edge-litert: pip install ai-edge-litert") from e
    return schema


def load(path: str | Path | None = None, outputs: tuple[str, ...] = (EMBEDDING,)) -> HandNet:
    """The network of `path` (default: MediaPipe's full hand-landmark model) up to the tensors named in `outputs`
    (default: the 1152-value pooled embedding; the tflite output names, e.g. "Identity", give the heads)."""
    path = Path(path) if path is not None else default_path()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PipelineError(f"cannot read the tflite model {path}: {e.strerror or e}") from e
    S = _schema()
    try:
        if not S.Model.ModelBufferHasIdentifier(data, 0):
            raise PipelineError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier)")
        return _build(S, S.Model.GetRootAsModel(data, 0), data, path, tuple(outputs))
    except PipelineError:
        raise
    except Exception as e:  # a truncated or corrupt flatbuffer fails deep inside the generated readers
        raise PipelineError(f"{path} could not be read as a TFLite model: {e}") from e


def _build(S, model, data: bytes, path: Path, outputs: tuple) -> HandNet:
    op_names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    codes = [max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(model.OperatorCodesLength())]
    g = model.Subgraphs(0)
    names = {i: g.Tensors(i).Name().decode() for i in range(g.TensorsLength())}
    consts = {}

    def constant(t: int):
        """Tensor t's value when it is stored in the file (float16/int8 widened to float32 in _dequantize)."""
        if t in consts:
            return consts[t]
        tensor = g.Tensors(t)
        buf = model.Buffers(tensor.Buffer())
        raw = buf.DataAsNumpy() if buf.DataLength() else None
        if raw is None and buf.Offset() > 1:  # large models keep buffers after the flatbuffer
            raw = np.frombuffer(data, np.uint8, buf.Size(), buf.Offset())
        if raw is None or isinstance(raw, int):
            return None
        dtypes = {S.TensorType.FLOAT32: np.float32, S.TensorType.FLOAT16: np.float16, S.TensorType.INT32: np.int32,
                  S.TensorType.INT8: np.int8, S.TensorType.UINT8: np.uint8, S.TensorType.INT64: np.int64}
        if tensor.Type() not in dtypes:
            raise PipelineError(f"{path}: tensor {names[t]} has tflite type {tensor.Type()}, which is not supported")
        shape = tuple(tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        consts[t] = np.frombuffer(np.asarray(raw).tobytes(), dtypes[tensor.Type()]).reshape(shape)
        return consts[t]

    wanted = {n: i for i, n in names.items()}
    missing = [n for n in outputs if n not in wanted]
    if missing:
        raise PipelineError(f"{path} has no tensor named {missing[0]!r}")
    ops_in_order = [g.Operators(i) for i in range(g.OperatorsLength())]
    # Walk back from the outputs: the ops they need, nothing after the pooled Mean unless a head was asked for.
    producer = {op.Outputs(0): k for k, op in enumerate(ops_in_order)}
    needed, stack = set(), [wanted[n] for n in outputs]
    while stack:
        k = producer.get(stack.pop())
        if k is not None and k not in needed:
            needed.add(k)
            stack += [t for t in ops_in_order[k].InputsAsNumpy().tolist() if t >= 0]
    ops, wiring = nn.ModuleList(), []
    for k in sorted(needed):
        op = ops_in_order[k]
        kind = op_names.get(codes[op.OpcodeIndex()], str(codes[op.OpcodeIndex()]))
        ins, out = [t for t in op.InputsAsNumpy().tolist()], op.Outputs(0)
        if kind == "DEQUANTIZE":
            consts[out] = _dequantize(g.Tensors(ins[0]), constant(ins[0]), path, names[ins[0]])
            continue
        shape = g.Tensors(ins[0]).ShapeAsNumpy() if g.Tensors(ins[0]).ShapeLength() else [0]
        module, live = _op(S, kind, op, ins, constant, int(shape[-1]), path)
        ops.append(module)
        wiring.append((live, out))
    input_id = g.Inputs(0)
    return HandNet(ops, wiring, input_id, [wanted[n] for n in outputs], names).eval()


def _dequantize(tensor, value, path: Path, name: str) -> np.ndarray:
    """A DEQUANTIZE of a constant, folded: float16 widened, int8/uint8 scaled per tensor or per channel."""
    if value is None:
        raise PipelineError(f"{path}: DEQUANTIZE of the non-constant tensor {name} is not supported")
    if value.dtype == np.float16:
        return value.astype(np.float32)
    q = tensor.Quantization()
    scale, zero = q.ScaleAsNumpy(), q.ZeroPointAsNumpy()
    shape = [1] * value.ndim
    if value.ndim and np.size(scale) > 1:
        shape[q.QuantizedDimension()] = -1
    return ((value.astype(np.float32) - np.reshape(zero, shape)) * np.reshape(scale, shape)).astype(np.float32)


def _op(S, kind: str, op, ins: list, constant, in_channels: int, path: Path):
    """(the torch module for one tflite op, the ids of its non-constant inputs)."""
    opts = op.BuiltinOptions()
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        cls = S.Conv2DOptions if kind == "CONV_2D" else S.DepthwiseConv2DOptions
        o = cls()
        o.Init(opts.Bytes, opts.Pos)
        w = constant(ins[1])
        bias = constant(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
        if w is None or w.dtype != np.float32:  # int8 weights without a DEQUANTIZE run on quantized activations
            raise PipelineError(f"{path}: {kind} with non-constant or quantized weights is not supported")
        if kind == "CONV_2D":  # (out, kh, kw, in) -> (out, in, kh, kw)
            weight = np.ascontiguousarray(w.transpose(0, 3, 1, 2))
            groups = None  # set from the input's channels below
        else:  # (1, kh, kw, in * multiplier) -> (in * multiplier, 1, kh, kw), one group per input channel
            weight = np.ascontiguousarray(w.transpose(3, 0, 1, 2))
            groups = w.shape[3] // o.DepthMultiplier()
        if groups is None:  # TFLite's grouped CONV_2D: the input has a multiple of the weights' channels
            groups = max(in_channels // w.shape[3], 1)
        return _Conv(weight.astype(np.float32), None if bias is None else bias.astype(np.float32), groups,
                     (o.StrideH(), o.StrideW()), (o.DilationHFactor(), o.DilationWFactor()),
                     o.Padding() == S.Padding.SAME, o.FusedActivationFunction()), [ins[0]]
    if kind == "FULLY_CONNECTED":
        o = S.FullyConnectedOptions()
        o.Init(opts.Bytes, opts.Pos)
        w, bias = constant(ins[1]), constant(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
        if w is None or w.dtype != np.float32:
            raise PipelineError(f"{path}: FULLY_CONNECTED with non-constant or quantized weights is not supported")
        return _Linear(w.astype(np.float32), None if bias is None else bias.astype(np.float32),
                       o.FusedActivationFunction(), o.KeepNumDims()), [ins[0]]
    if kind == "ADD":
        if any(constant(t) is not None for t in ins):
            raise PipelineError(f"{path}: ADD of a constant is not supported")
        o = S.AddOptions()
        o.Init(opts.Bytes, opts.Pos)
        return _Fn("ADD", act=o.FusedActivationFunction()), ins[:2]
    if kind == "MEAN":
        o = S.ReducerOptions()
        o.Init(opts.Bytes, opts.Pos)
        axes = tuple(NHWC_TO_NCHW[int(a) % 4] for a in np.ravel(constant(ins[1])))
        return _Fn("MEAN", axes=axes, keep_dims=bool(o.KeepDims())), [ins[0]]
    if kind == "LOGISTIC":
        return _Fn("LOGISTIC"), [ins[0]]
    if kind == "MAX_POOL_2D":
        o = S.Pool2DOptions()
        o.Init(opts.Bytes, opts.Pos)
        return _MaxPool((o.FilterHeight(), o.FilterWidth()), (o.StrideH(), o.StrideW()), o.Padding() == S.Padding.SAME,
                        o.FusedActivationFunction()), [ins[0]]
    raise PipelineError(f"{path}: the tflite op {kind} is not supported by this rebuild")
