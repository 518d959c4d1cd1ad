"""A float32 ONNX model rewritten as float16, without the `onnx` package.

`bench_yolov8.py --dtypes bfloat16` times onnxruntime's own 16-bit path next
to zoo's bfloat16 rows. onnxruntime's CPU provider runs neither bfloat16
convolutions nor a bfloat16 model; a float16 model it does run (with its
float16 kernels where it has them, its inserted float32 casts where it has
not), so the peer's 16-bit path is the package's float32 export cast to
float16, as ultralytics' `export(half=True)` writes it: every float32
initializer, constant, graph input, output and value type becomes float16,
`Cast(to=float)` becomes `Cast(to=float16)`, and Resize's `scales` (float32
by the ONNX spec) stay float32.

zoo does not depend on `onnx`, so this edits the protobuf wire format
directly: a message is a list of (field number, wire type, value) and only
the fields named below (from onnx.proto) are looked into; every other field
is copied byte for byte.

    from zoo.benchmarks.onnx_float16 import convert_file
    convert_file("best_fp16.onnx", "/tmp/yolov8s_float16.onnx")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FLOAT, FLOAT16 = 1, 10  # TensorProto.DataType
# onnx.proto field numbers
MODEL_GRAPH = 7
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT, GRAPH_VALUE_INFO = 1, 5, 11, 12, 13
NODE_INPUT, NODE_OUTPUT, NODE_OP_TYPE, NODE_ATTRIBUTE, NODE_DOMAIN = 1, 2, 4, 5, 7
ATTR_NAME, ATTR_I, ATTR_T, ATTR_G, ATTR_TENSORS, ATTR_GRAPHS = 1, 3, 5, 6, 10, 11
TENSOR_DATA_TYPE, TENSOR_FLOAT_DATA, TENSOR_NAME, TENSOR_RAW_DATA = 2, 4, 8, 9
VALUE_INFO_TYPE, TYPE_TENSOR, TYPE_ELEM_TYPE = 2, 1, 1

Field = list  # [field number, wire type, value: int | bytes | list of Field]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def parse(buf: bytes) -> list[Field]:
    """One message's fields, values undecoded (varints as ints, the rest as bytes)."""
    fields, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {number})")
        fields.append([number, wire, value])
    return fields


def serialize(fields: list[Field]) -> bytes:
    out = bytearray()
    for number, wire, value in fields:
        out += _put_varint(number << 3 | wire)
        if wire == 0:
            out += _put_varint(value)
        elif wire == 2:
            data = serialize(value) if isinstance(value, list) else value
            out += _put_varint(len(data)) + data
        else:
            out += value
    return bytes(out)


def _string(fields: list[Field], number: int) -> str | None:
    return next((v.decode() for n, _, v in fields if n == number), None)


def _tensor(buf: bytes, keep: set[str]) -> list[Field]:
    """A TensorProto, float16 if it was float32 (and its name is not in `keep`)."""
    fields = parse(buf)
    dtype = next((v for n, _, v in fields if n == TENSOR_DATA_TYPE), 0)
    if dtype != FLOAT or _string(fields, TENSOR_NAME) in keep:
        return fields
    raw = b"".join(v for n, _, v in fields if n == TENSOR_RAW_DATA)
    packed = b"".join(v for n, w, v in fields if n == TENSOR_FLOAT_DATA and w == 2)
    loose = b"".join(v for n, w, v in fields if n == TENSOR_FLOAT_DATA and w == 5)
    values = np.frombuffer(raw or packed or loose, "<f4")
    kept = [f for f in fields
            if f[0] not in (TENSOR_DATA_TYPE, TENSOR_RAW_DATA, TENSOR_FLOAT_DATA)]
    return kept + [[TENSOR_DATA_TYPE, 0, FLOAT16],
                   [TENSOR_RAW_DATA, 2, values.astype("<f2").tobytes()]]


def _value_info(buf: bytes, keep: set[str]) -> list[Field]:
    """A ValueInfoProto whose tensor element type float32 becomes float16."""
    fields = parse(buf)
    if _string(fields, 1) in keep:  # ValueInfoProto.name
        return fields
    for field in fields:
        if field[0] != VALUE_INFO_TYPE:
            continue
        type_proto = parse(field[2])
        for sub in type_proto:
            if sub[0] == TYPE_TENSOR:
                tensor_type = parse(sub[2])
                for t in tensor_type:
                    if t[0] == TYPE_ELEM_TYPE and t[2] == FLOAT:
                        t[2] = FLOAT16
                sub[2] = tensor_type
        field[2] = type_proto
    return fields


def _node(buf: bytes, keep: set[str]) -> list[Field]:
    fields = parse(buf)
    op_type = _string(fields, NODE_OP_TYPE)
    outputs = {v.decode() for n, _, v in fields if n == NODE_OUTPUT}
    if op_type == "Constant" and outputs & keep:  # a Constant's tensor is named by its node
        return fields
    for field in fields:
        if field[0] != NODE_ATTRIBUTE:
            continue
        attr = parse(field[2])
        name = _string(attr, ATTR_NAME)
        for sub in attr:
            if op_type == "Cast" and name == "to" and sub[0] == ATTR_I and sub[2] == FLOAT:
                sub[2] = FLOAT16
            elif sub[0] in (ATTR_T, ATTR_TENSORS):
                sub[2] = _tensor(sub[2], keep)
            elif sub[0] in (ATTR_G, ATTR_GRAPHS):
                sub[2] = _graph(sub[2])
        field[2] = attr
    return fields


def _float32_only(fields: list[Field]) -> set[str]:
    """Names of tensors that must stay float32: Resize's `scales` input."""
    keep = set()
    for number, _, value in fields:
        if number == GRAPH_NODE:
            node = parse(value)
            if _string(node, NODE_OP_TYPE) == "Resize":
                inputs = [v.decode() for n, _, v in node if n == NODE_INPUT]
                if len(inputs) > 2 and inputs[2]:
                    keep.add(inputs[2])
    return keep


def _graph(buf: bytes) -> list[Field]:
    fields = parse(buf)
    keep = _float32_only(fields)
    for field in fields:
        number = field[0]
        if number == GRAPH_NODE:
            field[2] = _node(field[2], keep)
        elif number == GRAPH_INITIALIZER:
            field[2] = _tensor(field[2], keep)
        elif number in (GRAPH_INPUT, GRAPH_OUTPUT, GRAPH_VALUE_INFO):
            field[2] = _value_info(field[2], keep)
    return fields


def convert(model: bytes) -> bytes:
    """The serialized ModelProto `model` with its float32 computation in float16."""
    fields = parse(model)
    for field in fields:
        if field[0] == MODEL_GRAPH:
            field[2] = _graph(field[2])
    return serialize(fields)


def convert_file(source: str | Path, target: str | Path) -> Path:
    target = Path(target)
    target.write_bytes(convert(Path(source).read_bytes()))
    return target
