"""`train`: a training loop over `strategy.run`, for MultiWorkerMirroredStrategy and every other strategy."""

import os

import keras
import tensorflow as tf

from tfsparse import keras_internals


def train(model, dataset, epochs=1, strategy=None, callbacks=None, checkpoint_dir=None, verbose=1):
    """Trains a compiled model on `dataset` with `strategy.run`, as `model.fit` would.

    Keras 3's `model.fit` fails under `MultiWorkerMirroredStrategy` with more
    than one worker (keras-team/keras#20585); this loop runs there, and under
    every other `tf.distribute` strategy (or none). It keeps the model's
    compile-time pieces: each replica computes the compiled loss of its part
    of the global batch, averaged over the *global* batch with
    `tf.nn.compute_average_loss` (plus the model's regularization losses,
    divided among the replicas), and the compiled optimizer applies the
    gradients, which it sums across replicas; the compiled metrics are
    updated on every replica. tfsparse's in-graph state advances exactly as
    in `fit`: every batch is one training call of every wrapper, so the
    pruning step of `tfsparse.layers.Masked` counts batches and masks are
    updated at the schedule's steps, identically on every replica. No
    `UpdatePruningStep` callback is needed.

    Callbacks get the epoch-level hooks (`on_train_begin/end`,
    `on_epoch_begin/end` with the epoch's logs); batch-level hooks are not
    called, which is what tfsparse's own callbacks need and keeps the step
    free of host round trips. `model.stop_training = True` stops after the
    epoch.

    The global batch is split evenly among the replicas: use a batch size
    that the number of replicas divides and `drop_remainder=True`. Every
    worker runs this function with the same dataset (each reads its share
    of every global batch), the same model and the same arguments.

    With `checkpoint_dir`, every variable of the model (weights, masks,
    pruning steps, scores, gates) and of the optimizer is saved with a
    `tf.train.CheckpointManager` at the end of every epoch, and a run that finds a checkpoint there resumes
    after its epoch. The chief (the only process, the `chief` task, or
    worker 0 of a cluster without one) writes to `checkpoint_dir`; other
    workers write their copy to a subdirectory of their own, as
    `tf.distribute` requires, and every worker restores the chief's
    checkpoint, so `checkpoint_dir` must be on a file system that all
    workers share. Runs resume at an epoch boundary: an epoch cut short is
    run again from its first batch (from a fresh iterator of `dataset`:
    shuffle it with a fixed seed, or not at all, to see the same batches).

    Args:
        model: a compiled Keras model with one loss, built (and compiled)
            under `strategy.scope()`.
        dataset: a `tf.data.Dataset` of global batches `(x, y)` or
            `(x, y, sample_weight)`.
        epochs: number of passes over `dataset`.
        strategy: the `tf.distribute` strategy; defaults to the one in
            scope (`tf.distribute.get_strategy()`).
        callbacks: Keras callbacks (epoch-level hooks only).
        checkpoint_dir: `None`, or a directory for checkpoints and resume.
        verbose: 1 prints one line per epoch, 0 nothing.

    Returns:
        The `keras.callbacks.History` of the run.

    Raises:
        ValueError: for an uncompiled model, a model whose variables were
            not created under `strategy`, or a bad `epochs`.
        TypeError: for a `dataset` that is not a `tf.data.Dataset`, or a
            model compiled with several losses.

    Example:

    >>> strategy = tf.distribute.OneDeviceStrategy("/cpu:0")  # or MirroredStrategy(), MultiWorkerMirroredStrategy()
    >>> schedule = tfsparse.schedules.ConstantSparsity(0.8, begin_step=1, frequency=2)
    >>> with strategy.scope():
    ...     pruned = tfsparse.prune_low_magnitude(model, schedule)
    ...     pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = tfsparse.distribute.train(pruned, train_ds, epochs=2, strategy=strategy, verbose=0)
    >>> int(pruned.get_layer("prune_low_magnitude_conv2").pruning_step.numpy())  # 2 epochs of 4 batches
    8
    """
    strategy = strategy or tf.distribute.get_strategy()
    _check_arguments(model, dataset, epochs, strategy)
    with strategy.scope():
        return _fit(model, dataset, epochs, strategy, callbacks, checkpoint_dir, verbose)


def _fit(model, dataset, epochs, strategy, callbacks, checkpoint_dir, verbose):
    """`train`, inside `strategy.scope()`, once the arguments are checked."""
    keras_internals.build_for_training(model, next(iter(dataset)))
    epoch = tf.Variable(0, dtype="int64", trainable=False)  # epochs done, saved with the checkpoints
    manager = _checkpoint_manager(model, epoch, checkpoint_dir, strategy) if checkpoint_dir else None
    loss_tracker = keras.metrics.Mean(name="loss")
    step = _train_step(model, strategy, loss_tracker)
    distributed = strategy.experimental_distribute_dataset(dataset)
    hooks = keras.callbacks.CallbackList(callbacks, add_history=True, model=model, epochs=epochs, verbose=0)
    model.stop_training = False
    hooks.on_train_begin()
    for index in range(int(epoch.numpy()), epochs):
        hooks.on_epoch_begin(index)
        model.reset_metrics()
        logs = _run_epoch(model, step, distributed, loss_tracker)
        epoch.assign(index + 1)
        if manager is not None:
            manager.save()
        if verbose:
            print(f"Epoch {index + 1}/{epochs}: " + ", ".join(f"{k}={v:.4g}" for k, v in logs.items()))
        hooks.on_epoch_end(index, logs)
        if model.stop_training:
            break
    hooks.on_train_end()
    return model.history


def _run_epoch(model, step, distributed, loss_tracker):
    """Runs `step` over one pass of `distributed`; returns the epoch's logs (mean loss, metrics)."""
    loss_tracker.reset_state()
    for batch in distributed:
        step(batch)
    logs = {"loss": float(loss_tracker.result())}
    for name, value in model.get_metrics_result().items():
        if name != "loss":
            logs[name] = float(value)
    return logs


def _train_step(model, strategy, loss_tracker):
    """A `tf.function` `step(batch)` training on one global batch; `loss_tracker` averages the loss per example.

    Nothing is reduced across replicas in the step but the gradients: the
    loss and the metrics are summed when they are read, once per epoch.
    """
    loss_fn = _per_example_loss(model)

    def replica_step(batch):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = tf.nn.compute_average_loss(loss_fn(y, y_pred), sample_weight=sample_weight)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = model.optimizer.scale_loss(loss)
        variables = model.trainable_variables
        model.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        # `loss` is this replica's share of the batch's mean loss: times the replicas, the mean of its part.
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        loss_tracker.update_state(loss * replicas, sample_weight=tf.shape(tf.nest.flatten(x)[0])[0])

    @tf.function
    def step(batch):
        strategy.run(replica_step, args=(batch,))

    return step


def _per_example_loss(model):
    """`loss(y_true, y_pred)` -> one loss per example, from the model's compiled loss."""
    try:
        function = keras.losses.get(model.loss)
    except (TypeError, ValueError):
        function = None
    if isinstance(function, keras.losses.Loss):
        function = function.call
    if not callable(function):
        raise TypeError(
            f"Argument `model` must be compiled with one loss (a name, function or keras.losses.Loss), "
            f"received a model compiled with loss={model.loss!r}."
        )

    def per_example(y_true, y_pred):
        values = function(y_true, y_pred)
        if len(values.shape) > 1:
            values = keras.ops.mean(values, axis=tuple(range(1, len(values.shape))))
        return values

    return per_example


def _checkpoint_manager(model, epoch, directory, strategy):
    """A `tf.train.CheckpointManager` of the model, its optimizer and `epoch`; restores the latest checkpoint.

    The checkpoint lists every variable of the model and of the optimizer,
    in their order: `tf.train.Checkpoint(model=model)` would follow
    TensorFlow's attribute tracking, which misses variables that Keras 3
    layers keep in lists (the masks of `tfsparse.layers.Masked`, say). The
    chief's manager writes to `directory`, another worker's to a
    subdirectory of its own; all restore the chief's latest checkpoint.
    """
    checkpoint = tf.train.Checkpoint(
        model_variables=list(model.variables), optimizer_variables=list(model.optimizer.variables), epoch=epoch)
    latest = tf.train.latest_checkpoint(directory)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
    if not is_chief(strategy):
        task = strategy.cluster_resolver
        directory = os.path.join(directory, f"{task.task_type}_{task.task_id}")
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=1)


def is_chief(strategy):
    """Whether this process is the one that writes checkpoints and reports under `strategy`.

    The only process of a single-host strategy, the `chief` task, or worker
    0 of a cluster without a chief (TensorFlow's rule).

    Args:
        strategy: a `tf.distribute` strategy.

    Returns:
        A bool.

    Example:

    >>> tfsparse.distribute.is_chief(tf.distribute.get_strategy())
    True
    """
    resolver = strategy.cluster_resolver
    if resolver is None or resolver.task_type in (None, "chief"):
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def _check_arguments(model, dataset, epochs, strategy):
    if not isinstance(model, keras.Model) or not getattr(model, "compiled", False) or model.optimizer is None:
        raise ValueError(
            f"Argument `model` must be a compiled keras.Model (call `model.compile(optimizer, loss)` "
            f"under `strategy.scope()` first), received: {model!r}."
        )
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            f"Argument `dataset` must be a tf.data.Dataset of global batches, received an object of type "
            f"{type(dataset).__name__}: wrap arrays with `tf.data.Dataset.from_tensor_slices((x, y)).batch(size)`."
        )
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"Argument `epochs` must be an integer >= 1, received: {epochs!r}.")
    foreign = [v.path for v in model.variables if not strategy.extended.variable_created_in_scope(v.value)]
    if foreign:
        raise ValueError(
            f"Argument `model` has variables created outside the scope of `strategy` "
            f"({type(strategy).__name__}), e.g. {foreign[:3]}: build and compile the model inside "
            f"`with strategy.scope():`."
        )
