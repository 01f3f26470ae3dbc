"""What the command-line jobs share: data, models, training, tables and plots."""

import argparse
import pathlib
import sys

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tfsparse import data, export, models  # noqa: E402
from tfsparse.methods.finetune import finetune  # noqa: E402
from tfsparse.methods.structured import TARGETS  # noqa: E402
from tfsparse.model_summary import summary  # noqa: E402

MODELS = {
    "lenet_300_100": models.lenet_300_100,
    "lenet5_caffe": models.lenet5_caffe,
    "resnet20": models.resnet20,
    "vgg_small": lambda input_shape, num_classes: models.vgg("small", input_shape, num_classes),
}
# Smallest image side each model accepts; smaller images are resized up.
MIN_SIDE = {"lenet_300_100": 1, "lenet5_caffe": 16, "resnet20": 1, "vgg_small": 8}


def positive_int(text):
    """An argparse type: an integer >= 1."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text):
    """An argparse type: an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def _int_at_least(text, minimum, allowed):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise argparse.ArgumentTypeError(f"must be {allowed}, received: {text!r}")
    return value


def add_common_arguments(parser, epochs, model="lenet_300_100"):
    """Adds --data, --model, --epochs, --batch-size, --seed and --out."""
    parser.add_argument("--data", default=data.DEFAULT,
                        help="dataset: 'digits' (embedded, default), 'fashion_mnist', or a prepared tfds name")
    parser.add_argument("--model", default=model, choices=sorted(MODELS), help="reference model to train")
    parser.add_argument("--epochs", type=positive_int, default=epochs, help="training epochs per phase")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("tfsparse-out"),
                        help="directory for the plot, the .tflite files and other outputs")


def load_data(args):
    """Returns `(train, test, input_shape, num_classes)` for the job's arguments."""
    shape, classes = data.describe(args.data)
    side = MIN_SIDE[args.model]
    image_size = None if min(shape[:2]) >= side else (side, side)
    if image_size:
        print(f"Resizing {args.data} images from {shape[:2]} to {image_size} for {args.model}.")
    train = data.load(args.data, "train", args.batch_size, image_size=image_size, seed=args.seed)
    test = data.load(args.data, "test", args.batch_size, image_size=image_size)
    shape, classes = data.describe(args.data, image_size=image_size)
    return train, test, shape, classes


def build_model(args, input_shape, num_classes):
    """Builds the chosen reference model with weights drawn from `args.seed`."""
    keras.utils.set_random_seed(args.seed)
    return MODELS[args.model](input_shape, num_classes)


def add_structured_arguments(parser, target):
    """Adds what the structured jobs share: the common arguments, --ratio, --target, --weights, epochs and rates."""
    add_common_arguments(parser, epochs=10, model="resnet20")
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of --target to remove, in [0, 1)")
    parser.add_argument("--target", default=target, choices=TARGETS, help="what --ratio counts")
    parser.add_argument("--finetune-epochs", type=positive_int, default=5, help="fine-tuning epochs after pruning")
    parser.add_argument("--weights", default=None,
                        help="trained weights of --model (.weights.h5); trains the dense model first when omitted")
    parser.add_argument("--lr", type=float, default=0.1, help="initial learning rate of dense training")
    parser.add_argument("--finetune-lr", type=float, default=0.01, help="initial learning rate of fine-tuning")


def save_figure(fig, path):
    """Writes a matplotlib figure to `path`, closes it and returns the path."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def trained_dense_model(args, train, input_shape, num_classes):
    """The model a structured job starts from: `--weights` loaded, or trained `--epochs` at `--lr`.

    Training uses the shared recipe (`tfsparse.finetune`); the trained
    weights are saved as `dense.weights.h5` in the output directory.
    """
    dense = build_model(args, input_shape, num_classes)
    if args.weights:
        print(f"\n1/3 Loading trained weights of {args.model} from {args.weights}")
        dense.load_weights(args.weights)
        return compile_model(dense)
    print(f"\n1/3 Training dense {args.model} on {args.data} for {args.epochs} epochs")
    finetune(dense, train, args.epochs, learning_rate=args.lr, verbose=fit_verbosity())
    dense.save_weights(args.out / "dense.weights.h5")
    return dense


def compile_model(model, learning_rate=1e-3):
    """Compiles for integer labels and logits, reporting accuracy."""
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,  # on CPU, XLA's compile time outweighs what it saves in a short job
    )
    return model


def fit_verbosity():
    """Progress bars on a terminal, one line per epoch in logs."""
    return 1 if sys.stdout.isatty() else 2


def accuracy(model, dataset):
    """Test accuracy of a compiled model, as a fraction."""
    return float(model.evaluate(dataset, verbose=0, return_dict=True)["accuracy"])


def model_row(name, model, test, tflite_path=None, samples=None, **extra):
    """One row of a job's table: test accuracy, parameters and FLOPs of `model`, and `extra` fields.

    With `tflite_path`, the model is also exported there and checked with
    LiteRT on `samples`; the row then holds its batch-1 latency.
    """
    if not model.compiled:
        compile_model(model)
    total = summary(model, print_fn=None).total
    row = {"model": name, "test accuracy": accuracy(model, test), "parameters": total["parameters"],
           "FLOPs": total["flops"], **extra}
    if tflite_path is not None:
        row["LiteRT ms"] = export.tflite(model, tflite_path, sample_inputs=samples).litert_latency_ms
    return row


def layer_width(layer):
    """Output channels of a convolution or Dense layer, else None."""
    return getattr(layer, "filters", None) or getattr(layer, "units", None)


def plot_accuracy_against_cost(ax, rows):
    """Draws each row's test accuracy against its MFLOPs on the matplotlib axes `ax`."""
    for row in rows:
        ax.plot(row["FLOPs"] / 1e6, row["test accuracy"], "o", label=row["model"])
    ax.set_xlabel("MFLOPs per example")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    ax.set_title("Accuracy against cost")


def print_table(rows, columns, percent=()):
    """Prints a list of dicts as an aligned table; `percent` columns as percentages."""
    cells = [[str(c) for c in columns]] + [
        [f"{row[c]:.2%}" if c in percent and c in row else _format(row.get(c, "")) for c in columns] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for i, r in enumerate(cells):
        print("  ".join(v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _format(value):
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def output_dir(args):
    """Creates and returns the job's output directory."""
    args.out.mkdir(parents=True, exist_ok=True)
    return args.out
