"""Is HAP's channel ranking signal or noise? Per-channel Hutchinson traces against their standard errors.

The dense ResNet-20 that `structured.py` prunes (the same training subset,
recipe, epochs and seed; its `--cache` weights are reused when present) is
scored with `tfsparse.scoring.hessian_trace(per="channel")` at the
settings of the benchmark's HAP rows (`--samples 32 --batches 4`). For
each kernel the JSON records how many channel estimates are negative, how
many lie within two standard errors of zero, and the median of |estimate|
/ standard error: where that median is below 2, most of the ranking
`tfsparse.hap` builds from these estimates is noise, and the samples
needed for a median of 2 follow from the 1/sqrt(samples) law.

    python benchmarks/hessian_noise.py [--samples 32] [--batches 4] [--seed 0] [--cache cache]

Writes benchmarks/results/hessian_noise.json.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import tfsparse as ts  # noqa: E402
from common import machine, write_json  # noqa: E402
from structured import dense_model, training_subset  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=6, help="dense training epochs, as in structured.py")
    parser.add_argument("--train-examples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", help="structured.py's cache directory of dense weights")
    args = parser.parse_args()
    train = training_subset(args.train_examples, args.seed)
    model, _ = dense_model("resnet20", train, args.train_examples, args.epochs, args.seed, args.cache)
    traces = ts.scoring.hessian_trace(model, train, samples=args.samples, batches=args.batches, per="channel",
                                      seed=args.seed, verbose=0)
    kernels = {}
    for name, trace in traces.items():
        value, stderr = np.asarray(trace.value), np.asarray(trace.stderr)
        kernels[name] = {"channels": int(value.size), "negative": int(np.sum(value < 0)),
                         "within_2_stderr_of_0": int(np.sum(np.abs(value) < 2 * stderr)),
                         "median_abs_over_stderr": float(np.median(np.abs(value) / stderr))}
    channels = sum(k["channels"] for k in kernels.values())
    ratio = float(np.median([k["median_abs_over_stderr"] for k in kernels.values()]))
    summary = {"channels": channels,
               "share_within_2_stderr_of_0": sum(k["within_2_stderr_of_0"] for k in kernels.values()) / channels,
               "share_negative": sum(k["negative"] for k in kernels.values()) / channels,
               "median_of_kernel_medians": ratio,
               "samples_for_median_2": int(np.ceil(args.samples * (2 / ratio) ** 2))}
    print(summary)
    print(write_json("hessian_noise", {"machine": machine(), "settings": vars(args), "summary": summary,
                                       "kernels": kernels}))


if __name__ == "__main__":
    main()
