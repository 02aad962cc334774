"""Compression as a measured trade-off: one command turns a model into smaller or faster ones
(static int8, channel pruning, distillation into a small student), scores every result on the
same held-out images, times each as the exported ONNX graph on this machine, and writes
``compress.json`` with a report that marks the Pareto front.

>>> from headstart.compress import compress
>>> result = compress("runs/x/model", "data/", "runs/x-small", methods="int8,prune:0.3")
>>> [(r.method, r.accuracy, r.images_per_s, r.size_bytes) for r in result.records]
"""

from headstart.compress.int8 import int8_bundle
from headstart.compress.methods import Method, parse_methods
from headstart.compress.run import CompressResult, Record, compress

__all__ = ["CompressResult", "Method", "Record", "compress", "int8_bundle", "parse_methods"]
