"""The few private Keras names tfsparse relies on, each with the reason.

Keras 3 offers no public way to do these things; keeping every private
access here means a Keras upgrade that moves one breaks one function, and
the rest of the package reads only public Keras API.
"""

import contextlib

import keras
from keras.src.backend.common import global_state
from keras.src.saving import serialization_lib


def producing_call(tensor):
    """The node (layer call) of a functional graph that produced `tensor`.

    Keras 3 has no public accessor for the call that produced a KerasTensor:
    `_keras_history` (operation, node index, tensor index) and
    `operation._inbound_nodes` are the links Keras' own Functional model
    reads to run and serialize the graph. The public alternative,
    `get_config()`, re-encodes the same links with node indices that are
    offset for nested models.
    """
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index]


def direct_sublayers(layer):
    """The layers `layer` tracks directly (not their own sublayers).

    `Model.layers` covers models only; a plain layer lists the sublayers it
    creates only through `_flatten_layers`.
    """
    return list(layer._flatten_layers(include_self=False, recursive=False))


@contextlib.contextmanager
def unlocked(model):
    """Lets a built model's set of sublayers change inside the block.

    Keras locks a built layer's tracker and offers no public way to swap a
    sublayer; Keras itself unlocks it the same way while building.
    """
    locked = model._tracker.locked
    model._tracker.unlock()
    try:
        yield
    finally:
        if locked:
            model._tracker.lock()


def forget_sublayer(model, layer):
    """Drops `layer` from the sublayers `model` tracks.

    Keras' attribute tracking appends a layer assigned to an attribute but
    keeps the one it replaces in `model._layers`; without this, its
    variables would be listed twice.
    """
    if layer in model._layers:
        model._layers.remove(layer)


def call_context():
    """The Keras call context of the running layer call, or None outside a call.

    Its `entry_layer` is the outermost layer (usually the model) being
    called: a layer inside a model has no other way to reach the model that
    calls it. Keras keeps it per thread and makes a new one for each
    outermost call, so each trace of a compiled step, each eager step and
    each replica of a distribution strategy gets its own.
    """
    return global_state.get_global_attribute("current_call_ctx")


@contextlib.contextmanager
def compile_state_hidden(model):
    """Makes `model` and its nested models look uncompiled inside the block.

    `keras.models.clone_model` compiles every clone of a compiled model
    from its compile config, which deserializes the user's optimizer: that
    fails for a custom optimizer class that is not registered, and
    otherwise hands back a fresh optimizer. It has no argument to skip
    this; clearing the `compiled` flag that it reads, for the time of the
    clone, is the only way short of copying Keras' cloning code.
    """
    models = [m for m in model._flatten_layers(include_self=True) if getattr(m, "compiled", False)]
    for compiled in models:
        compiled.compiled = False
    try:
        yield
    finally:
        for compiled in models:
            compiled.compiled = True


def forget_compile_state(model):
    """Leaves `model` uncompiled, without the step functions traced for it.

    Keras caches the traced train, test and predict functions on the model
    and drops them only in `compile`; a model whose layers were swapped in
    place would otherwise keep running (and training) the old layers. Keras
    has no public way to un-compile a model.
    """
    model.compiled = False
    model.train_function = model.test_function = model.predict_function = None


def keras_mask(tensor):
    """The Keras mask attached to `tensor` (e.g. by `Embedding(mask_zero=True)`), or None.

    A wrapper calls the layer it wraps through `call`, not `__call__`, so
    it must pass that layer the input masks Keras' `__call__` would have
    passed; Keras attaches them to tensors and reads them back with
    this private function only.
    """
    from keras.src.backend import get_keras_mask

    return get_keras_mask(tensor)


def build_for_training(model, batch):
    """Builds a compiled model's layers, compiled loss, metrics and optimizer for `batch`.

    `model.fit` does this before its first step (`_symbolic_build`), so
    that no variable is created inside a replica's step; a training loop
    over `strategy.run` needs the same, and Keras has no public call for it.
    """
    model._symbolic_build(data_batch=batch)


def safe_deserialization():
    """A scope in which Keras deserializes in safe mode, whatever the process set.

    `keras.saving.deserialize_keras_object(..., safe_mode=True)` yields to
    the process-wide setting of `keras.config.enable_unsafe_deserialization()`;
    only Keras' `SafeModeScope`, which `keras.saving.load_model` uses and
    Keras does not export, takes precedence over it.
    """
    return serialization_lib.SafeModeScope(True)


@contextlib.contextmanager
def shape_only_variables():
    """A scope in which new Keras variables get a shape but no value.

    Inside `keras.StatelessScope(initialize_variables=False)` Keras defers
    the initialization of new variables and lists them as uninitialized;
    the next stateless scope to close would initialize them. Keras has no
    public way to drop them from that list, which must happen so that a
    model built only to read its shapes never allocates its values.
    """
    before = list(global_state.get_global_attribute("uninitialized_variables") or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        global_state.set_global_attribute("uninitialized_variables", before)


def input_shape_argument(layer):
    """Returns the `input_shape` that `layer` was created with, or None.

    Keras keeps it in a private attribute, read by `keras.Sequential` to
    create the model's input. A pruning wrapper passes it on (as TFMOT's
    does), so that a Sequential model of wrapped layers is built as the
    unwrapped one would be; Keras has no public accessor for it.
    """
    return getattr(layer, "_input_shape_arg", None)


def in_xla_compilation():
    """Is the function being traced compiled by XLA (e.g. `model.compile(jit_compile=True)`)?

    Keras compiles its training step with `tf.function(jit_compile=True)`
    and tells the layers nothing; TensorFlow marks the graph being traced,
    but offers no public way to read the mark. A layer needs it to avoid
    ops that XLA cannot compile (such as `NthElement`).
    """
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph())
