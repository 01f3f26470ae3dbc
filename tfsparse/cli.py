"""The `tfsparse` command: `python -m tfsparse <job> [options]`."""

import argparse
import importlib
import os
import warnings

# Each job lives in tfsparse/jobs/<name>.py, with "-" in its name spelled "_".
JOBS = ("csgd", "demo", "freezenet", "hap", "jackpot", "polarize", "prune-channels")


def run(argv=None):
    """Parses the command line, runs the chosen job and returns its result."""
    parser = argparse.ArgumentParser(prog="tfsparse", description="Sparsity and compression for Keras 3 models.")
    parser.add_argument(
        "--verbose", action="store_true", help="show the full traceback of an error and TensorFlow's own logs"
    )
    jobs = parser.add_subparsers(dest="job", required=True, metavar="JOB")
    modules = {}
    for name in JOBS:
        module = importlib.import_module(f"tfsparse.jobs.{name.replace('-', '_')}")
        module.add_arguments(jobs.add_parser(name, help=module.HELP, description=module.HELP))
        modules[name] = module
    args = parser.parse_args(argv)
    if not args.verbose:
        _silence_library_logs()
    try:
        return modules[args.job].run(args)
    except (ValueError, TypeError, OSError, KeyError) as error:
        if args.verbose:
            raise
        # One line that names the problem; `--verbose` shows the traceback.
        raise SystemExit(f"tfsparse {args.job}: error: {error}") from None


def _silence_library_logs():
    """Hides what the libraries log that a job's user cannot act on.

    TensorFlow's C++ logs (if TensorFlow is not yet imported; see
    `tfsparse.native_logs` for those it prints while being imported), and
    Keras' warning that `fit` ignores `shuffle=True` for a `tf.data`
    dataset: the jobs' datasets are shuffled by `tfsparse.data`.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed, but will be ignored", category=UserWarning)


def main(argv=None):
    """The console script: runs a job, returns the exit status."""
    run(argv)
    return 0
