"""The base wrapper: a layer whose weights are a function of stored state."""

import inspect

import keras
import numpy as np
import tensorflow as tf

from tfsparse import keras_internals
from tfsparse.registry import check_prunable, prunable_weight_names
from tfsparse.walk import weight_named


class LayerWrapper(keras.layers.Wrapper):
    """A `keras.layers.Wrapper` that computes in the wrapped layer's dtype policy.

    Keras casts a layer's inputs and autocasts its variables by the policy
    of the layer being called, which for a wrapper is the wrapper's own.
    This base gives the wrapper the wrapped layer's policy, so wrapping
    changes no dtype: a layer kept in float32 in a `mixed_float16` model
    (say, the output layer) still computes in float32 once wrapped. Base
    of every tfsparse wrapper; named `<wrapper class>_<layer name>`
    unless given a `name` (e.g. `masked_dense`).

    Args:
        layer: the Keras layer to wrap.
        **kwargs: base `keras.layers.Layer` arguments (`name`, ...); a
            `dtype`, if given, must be the layer's policy.

    Raises:
        TypeError: if `layer` is not a Keras layer.
        ValueError: for a `dtype` other than the layer's policy.

    Example:

    >>> wrapper = LayerWrapper(keras.layers.Dense(3, dtype="mixed_float16"))
    >>> wrapper.dtype_policy.name
    'mixed_float16'
    """

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"Argument `layer` must be a keras.layers.Layer instance, "
                f"received: {layer!r} (of type {type(layer).__name__})."
            )
        kwargs.setdefault("name", f"{type(self).__name__.lower()}_{layer.name}")
        dtype = kwargs.pop("dtype", None)
        if dtype is not None and keras.dtype_policies.get(dtype).name != layer.dtype_policy.name:
            raise ValueError(
                f"Argument `dtype` must be the wrapped layer's dtype policy, "
                f"{layer.dtype_policy.name!r} (a wrapper computes as its layer does), received: {dtype!r}. "
                f"Set the policy on the layer instead."
            )
        super().__init__(layer, dtype=layer.dtype_policy, **kwargs)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Like `keras.layers.Wrapper.from_config`; the policy comes with the wrapped layer's config.

        A `dtype` in the wrapper's own config is ignored, and the given
        `config` is left as it was (Keras' pops the wrapped layer's entry).
        """
        config = {key: value for key, value in config.items() if key != "dtype"}
        return super().from_config(config, custom_objects=custom_objects)


class ParametrizedWrapper(LayerWrapper):
    """Base class of the tfsparse wrappers that parametrize weights.

    The wrapper builds the wrapped layer, lets a subclass add state for each
    prunable weight (a mask, scores, a gate, ...) and calls the wrapped layer
    with *effective* weights: its `call` runs in a `keras.StatelessScope`
    that maps each prunable variable to its effective tensor, as
    `layer.stateless_call` does. The wrapped layer's own variables are
    never overwritten, so optimizers, checkpoints and `get_config` all see
    plain state.

    Every read of a prunable variable inside the call sees the effective
    tensor, however deep in the layer it happens: an RNN's cell reads its
    masked `kernel` and `recurrent_kernel` at every time step of the
    recurrent loop, a MultiHeadAttention's projections read their masked
    kernels, and the gradient reaches the stored variables through the
    effective tensors only (so pruned entries get none). One wrapper
    around the whole layer therefore covers layers whose prunable weights
    live in sublayers (`tfsparse.registry.named_weights` names them, e.g.
    `lstm_cell/kernel`). Other state the layer updates in its call (the
    seed of an RNN cell's dropout, a stateful RNN's states) is written
    back to its variables, as a plain call would. The wrapped layer's
    `call` receives the positional arguments (a MultiHeadAttention's
    `value`), `training` and the input `mask` when it takes them, and the
    wrapper's output mask is the wrapped layer's.

    Subclasses implement:

    - `build_parametrization(weights)`: create their variables, given the
      list of prunable weight variables of the wrapped layer.
    - `effective_weight(index, weight, training)`: return the tensor to use
      in place of the prunable weight number `index`.
    - optionally `update_state(training)`: in-graph state updates that must
      run once per call before the effective weights are computed (a step
      counter, a scheduled mask update).
    - optionally `summary_fields()`: extra per-layer figures that
      `tfsparse.summary` shows as columns (e.g. frozen weights), and
      `summary_ratios()`: columns derived from a row (e.g. a compression
      factor).
    - optionally `target_sparsity()`: the sparsity the wrapper is asked to
      reach now, which `tfsparse.callbacks.PruningSummaries` logs.

    The wrapped layer's regularizers count as they do without the wrapper,
    in `model.losses` and in the loss that `fit` minimizes: its activity
    regularizer on its outputs (divided by the batch size, as Keras does)
    and its weight regularizers. The regularizer of a prunable weight
    (e.g. `kernel_regularizer`) sees the *effective* weight, the one the
    layer computes with, so pruned entries carry no penalty and frozen ones
    a constant one. This is TFMOT's rule too: its wrapper writes
    `kernel * mask` into the kernel that the regularizer reads. At build,
    the wrapper takes these regularizers over from the wrapped layer's
    variables (so that nothing counts twice) and adds them, with the
    activity loss, at each call. The other weights (a bias) keep their own
    regularizers, which Keras counts while they are trainable.

    A layer whose `build` takes several input shapes (MultiHeadAttention)
    must be built before it is wrapped (`tfsparse.prune_low_magnitude` on
    a built model does this).

    Args:
        layer: the Keras layer to wrap, of a type with prunable weights in
            the layer registry (see `tfsparse.register_layer`), a subclass
            of one, or a layer with a `get_prunable_weights()` method.
        **kwargs: base layer arguments (`name`, ...; see `LayerWrapper`).
    """

    def __init__(self, layer, **kwargs):
        super().__init__(layer, **kwargs)
        if isinstance(layer, ParametrizedWrapper):
            raise ValueError(
                f"Argument `layer` is already wrapped by tfsparse "
                f"({type(layer).__name__} around {layer.layer.name!r}); "
                f"wrap the inner layer instead."
            )
        check_prunable(layer)
        self.supports_masking = layer.supports_masking

    @property
    def weight_names(self):
        """Names of the wrapped layer's prunable weights (see `tfsparse.registry.prunable_weight_names`)."""
        return prunable_weight_names(self.layer)

    def build(self, input_shape=None):
        super().build(input_shape)
        self.build_parametrization(self.prunable_weights)
        self._weight_regularizers = tuple(w.regularizer for w in self.prunable_weights)
        for weight in self.prunable_weights:
            weight.regularizer = None  # counted on the effective weight in `call`
        self.built = True

    @property
    def prunable_weights(self):
        """The wrapped layer's prunable weight variables, in `weight_names` order.

        Looked up rather than stored: an attribute holding them would make
        Keras track (and save) each of them a second time as the wrapper's own.
        """
        return [weight_named(self.layer, name) for name in self.weight_names]

    def build_parametrization(self, weights):
        """Creates the wrapper's state for the given prunable weights."""

    def update_state(self, training):
        """In-graph state updates run at the start of every call."""

    def effective_weight(self, index, weight, training):
        """Returns the tensor used in place of prunable weight `index`."""
        return weight

    def summary_fields(self):
        """Returns `{column name: number}` for `tfsparse.summary`; none by default."""
        return {}

    def assign_masks(self, masks):
        """Assigns 0/1 `masks`, one per prunable weight, to the wrapper's `masks` variables.

        For subclasses that keep one mask variable per prunable weight in
        `self.masks` (`Masked`, `Frozen`); their `set_masks` calls it.

        Raises:
            ValueError: before the layer is built, or for a wrong number of
                masks, a wrong shape, or values other than 0 and 1.
        """
        if not self.built:
            raise ValueError(
                f"Layer {self.name!r} is not built, so it has no masks yet. Build it first, e.g. "
                f"`layer.build(input_shape)` or call it on a batch of data."
            )
        if len(masks) != len(self.masks):
            raise ValueError(
                f"Argument `masks` must hold {len(self.masks)} arrays for layer {self.name!r}, received {len(masks)}."
            )
        for variable, mask in zip(self.masks, masks):
            value = np.asarray(keras.ops.convert_to_numpy(mask))
            if value.shape != tuple(variable.shape) or not np.isin(value, (0, 1)).all():
                raise ValueError(
                    f"Argument `masks` must hold 0/1 arrays of shape {tuple(variable.shape)} "
                    f"for {variable.path!r}, received shape {value.shape} with values "
                    f"{np.unique(value)[:5].tolist()}."
                )
            variable.assign(value.astype(variable.dtype))

    @classmethod
    def summary_ratios(cls):
        """Returns `{column name: function(row)}` for `tfsparse.summary`; none by default.

        Each function maps a summary row (a dict of its columns, the total
        row included) to a number or None; use it for figures that are not
        sums, such as ratios.
        """
        return {}

    def target_sparsity(self):
        """Returns the sparsity this layer is asked to reach now, or None if it has no target."""
        return None

    def effective_weights(self, training=False):
        """Returns `{weight name: effective tensor}` for every prunable weight."""
        return {
            name: self.effective_weight(i, w, training)
            for i, (name, w) in enumerate(zip(self.weight_names, self.prunable_weights))
        }

    def call(self, inputs, *args, training=None, **kwargs):
        self.update_state(training)
        weights = self.prunable_weights
        effective = [self.effective_weight(i, w, training) for i, w in enumerate(weights)]
        with keras.StatelessScope(state_mapping=list(zip(weights, effective))) as scope:
            outputs = self.layer.call(inputs, *args, **self._inner_kwargs((inputs, *args), kwargs, training))
        # Outside the scope: state updates inside it are recorded, not applied.
        self._write_back(scope, weights)
        self._add_regularization_losses(effective, outputs)
        return outputs

    def _inner_kwargs(self, args, kwargs, training):
        """`kwargs` plus what Keras' `__call__` would pass the wrapped layer's `call`.

        That is `training` (when set) and the masks of the positional inputs:
        `mask` for a single input, `<argument>_mask` for several (a
        MultiHeadAttention's `value_mask`), where `call` takes them.
        """
        taken = inspect.signature(self.layer.call).parameters
        extra = {"training": training}
        if len(args) == 1:
            extra["mask"] = keras_internals.keras_mask(args[0])
        else:
            extra.update((f"{name}_mask", keras_internals.keras_mask(value)) for name, value in zip(taken, args))
        return {**{k: v for k, v in extra.items() if v is not None and k in taken}, **kwargs}

    def _write_back(self, scope, weights):
        """Assigns the state the wrapped layer updated inside `scope` (not the prunable weights) to its variables."""
        prunable = set(map(id, weights))
        for variable in self.layer.variables:
            value = None if id(variable) in prunable else scope.get_current_value(variable)
            if value is not None:
                variable.assign(value)

    def _add_regularization_losses(self, effective, outputs):
        """Adds the wrapped layer's regularization losses, which a call in a stateless scope leaves out."""
        for regularizer, value in zip(self._weight_regularizers, effective):
            if regularizer is not None:
                self.add_loss(regularizer(value))
        if self.layer.activity_regularizer is not None:
            loss = self.layer.activity_regularizer(outputs)
            examples = keras.ops.cast(keras.ops.shape(outputs)[0], loss.dtype)
            self.add_loss(keras.ops.divide_no_nan(loss, examples))

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, *args, training=None, **kwargs):
        return self.layer.compute_output_spec(inputs, *args, **self._inner_kwargs((inputs, *args), kwargs, training))

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)


def straight_through(forward, kept):
    """`forward(kept)`, with the gradient passed to `kept` straight through.

    The effective weight of a wrapper with a boolean mask is computed from
    the stored weight in the forward pass; in the backward pass, the
    gradient of the result reaches the stored weight whole, as if unmasked
    (a straight-through estimator). Entries of `kept` that `forward` drops
    do not reach the layer, so their gradient changes nothing it computes;
    skipping its masking saves a pass over the weight per step.

    Args:
        forward: a function of one tensor, returning a tensor of its shape
            and dtype; the tensors it closes over get no gradient.
        kept: a tensor or variable.

    Returns:
        `forward(kept)`.
    """

    # A plain tensor: `keras.ops.convert_to_tensor` returns a variable as it
    # is, and a custom gradient must not see it as a captured variable. Only
    # `kept` is an argument of the custom gradient: an argument without a
    # gradient would still get a tensor of zeros built in every step.
    @keras.ops.custom_gradient
    def forward_kept(kept):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return upstream

        return forward(kept), grad

    return forward_kept(tf.convert_to_tensor(kept))


def apply_mask(mask, weight):
    """`weight` where `mask` is true and zero elsewhere, with the gradient passed straight through.

    The effective weight of `Masked`: the weight times the mask as a
    number, a cast and a multiply (on CPU, cheaper than a select; see
    `benchmarks/mask_apply.py`). The stored entries behind the mask are
    multiplied by zero, so they count for nothing while finite.

    Args:
        mask: a boolean tensor or variable.
        weight: a float tensor or variable of `mask`'s shape.

    Returns:
        A tensor of `weight`'s shape and dtype.

    Example:

    >>> apply_mask(tf.constant([True, False]), tf.constant([3.0, 4.0])).numpy()
    array([3., 0.], dtype=float32)
    """
    mask = tf.convert_to_tensor(mask)
    return straight_through(lambda kept: kept * tf.cast(mask, kept.dtype), weight)


def select(mask, kept, other):
    """`where(mask, kept, other)`, with the gradient passed to `kept` straight through.

    The effective weight of `Frozen`: its trained values where the mask is
    true, its frozen values elsewhere; no gradient reaches `other`. The
    operands have one shape, so the select needs no broadcasting, which
    costs more on CPU (see `benchmarks/mask_apply.py`).

    Args:
        mask: a boolean tensor or variable.
        kept: a tensor or variable of `mask`'s shape, the values where it is true.
        other: a tensor of `mask`'s shape, the values where it is false
            (cast to `kept`'s dtype, e.g. under mixed precision).

    Returns:
        A tensor of `kept`'s shape and dtype.

    Example:

    >>> select(tf.constant([True, False]), tf.constant([3.0, 4.0]), tf.constant([1.0, 2.0])).numpy()
    array([3., 2.], dtype=float32)
    """
    mask = tf.convert_to_tensor(mask)
    return straight_through(lambda kept: tf.raw_ops.Select(condition=mask, x=kept, y=tf.cast(other, kept.dtype)), kept)
