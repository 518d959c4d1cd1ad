"""zoo's benchmarks, shipped with the package so `zoo benchmark` runs anywhere.

- `suite`: `zoo benchmark`, every family against its peer in one report
  (`report`: the table, README section and chart).
- `bench_bert`, `bench_opt`, `bench_whisper`, `bench_yolov8`,
  `bench_stable_diffusion`: one family's workload and peer each, runnable on
  their own (`python -m zoo.benchmarks.bench_bert --help`).
- `bench_sharded_load`, `bench_bf16_ops`: sharded loading and the 16-bit
  kernels, outside `zoo benchmark`.
- `common` (worker processes, timing, idle waits, the machine's description
  and matrix-product peaks), `precision` (`--dtypes` and the CPU's 16-bit
  features), `onnx_float16` (the float16 ONNX peer for YOLOv8).

Methods and recorded numbers: the repository's benchmarks/README.md.
"""
