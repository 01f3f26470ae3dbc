"""The channel dependency graph of a Keras model: which channels must go together.

Every channel of every tensor in a functional graph is a node; layers that
tie channels together (an `Add`, a layer called twice, a BatchNormalization
that follows its producer) join nodes, so a connected set is one channel
that can only be removed as a whole. A `ChannelGroup` gathers the layers
whose output channels are tied this way, as Torch-Pruning's DepGraph does for
PyTorch; the graph knows nothing of how channels are scored or removed.
"""

import dataclasses
import functools
import math
import numbers

import keras
import numpy as np

from tfsparse.checks import check_built
from tfsparse.keras_internals import producing_call
from tfsparse.registry import channels as channel_rules
from tfsparse.surgery import rules
from tfsparse.surgery.clone import is_graph_model
from tfsparse.surgery.unwrap import unwrap_layers
from tfsparse.walk import wrappers


PRODUCER, MEMBER, CONSUMER = "producer", "member", "consumer"
ROLES = (PRODUCER, MEMBER, CONSUMER)


@dataclasses.dataclass(frozen=True)
class WeightSlice:
    """Where the channels of a `ChannelGroup` sit along one axis of one weight.

    Attributes:
        layer: name of the layer that holds the weight.
        weight: the weight's name in `layer.weights` (`kernel`, `bias`,
            `gamma`, `depthwise_kernel`, ...).
        axis: the (non-negative) axis of the weight indexed by the channels.
        role: `"producer"`: the output axis of a layer that makes the
            channels (Conv, Dense, Conv*Transpose, Embedding, the pointwise
            part of SeparableConv), its bias included. `"member"`: a weight
            narrowed with channels it carries through (BatchNormalization
            gamma, beta and moving statistics, DepthwiseConv kernel and
            bias, the depthwise kernel of SeparableConv, PReLU alpha,
            LayerNormalization...). `"consumer"`: the input axis of a layer
            that reads the channels and sums over them.
        positions: one tuple per group channel: its positions along `axis`.
            A channel can have several (after `Flatten`, `c + k*C`; after a
            depthwise multiplier `m`, `c*m` to `c*m + m - 1`; a channel tied
            twice into one tensor) or none (a consumer reading only some
            of the group's producers).
    """

    layer: str
    weight: str
    axis: int
    role: str
    positions: tuple


@dataclasses.dataclass(frozen=True, repr=False)
class ChannelGroup:
    """Channels of several layers that can only be removed together.

    Channel `i` of the group is the set of producer channels
    `channels[i]`: removing it removes each of them, and the matching inputs
    of every consumer. `slices` lists every weight axis that carries the
    group's channels; `slices_of(i)` gives channel `i`'s part of each.

    Attributes:
        producers: names of the layers whose output channels are in the
            group (Conv, Dense, ... whose outputs are added, multiplied or
            otherwise tied together), in model order.
        consumers: names of the layers that read the group's channels as
            inputs (their input slices go with the channels).
        members: names of the layers that carry the channels through and
            are narrowed with them (BatchNormalization, DepthwiseConv, ...).
        channels: one entry per group channel: the `(producer, output
            channel)` pairs it ties together.
        slices: the `WeightSlice`s of the group, layer by layer in model
            order.
        pinned: group channel indices that cannot be removed (their slices
            are listed all the same).
        reason: why the pinned channels cannot be removed (`None` if none
            are pinned), e.g. they are model outputs or reach a layer the
            graph cannot map channel by channel.

    Layer names are those of the model with tfsparse wrappers stripped
    (`tfsparse.strip`), that is the wrapped layers' names.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 7, name="conv")(inputs)
    >>> x = keras.layers.Flatten()(keras.layers.BatchNormalization(name="bn")(x))
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(x))
    >>> group = tfsparse.surgery.dependency_groups(model)[0]
    >>> group.producers, group.members, group.consumers, group.size
    (('conv',), ('bn',), ('fc',), 4)
    >>> group.slices_of(1, roles=("producer", "consumer"))
    [('conv', 'kernel', 3, (1,)), ('conv', 'bias', 0, (1,)), ('fc', 'kernel', 0, (1, 5, 9, 13))]
    """

    producers: tuple
    consumers: tuple
    members: tuple
    channels: tuple
    slices: tuple
    pinned: frozenset
    reason: str | None

    def __repr__(self):
        return f"ChannelGroup(producers={self.producers}, size={self.size}, pinned={len(self.pinned)})"

    @property
    def size(self):
        """Number of channels of the group."""
        return len(self.channels)

    @property
    def prunable(self):
        """Whether at least one channel of the group can be removed."""
        return len(self.pinned) < self.size

    def indices(self, layer):
        """Returns the output channels of producer `layer` in group order.

        `indices(layer)[i]` is the channel of `layer` tied to group channel
        `i` (the first one if several are), or -1 if none is.

        Raises:
            ValueError: if `layer` is not a producer of the group.
        """
        if layer not in self.producers:
            raise ValueError(
                f"Argument `layer` must be one of the group's producers {list(self.producers)}, received: {layer!r}."
            )
        return [next((c for name, c in pairs if name == layer), -1) for pairs in self.channels]

    def slices_of(self, channel, roles=ROLES):
        """Returns the part of every weight that holds group channel `channel`.

        Zeroing the consumer parts makes the model ignore the channel: it
        then computes what it computes once the channel is removed (unless
        a layer normalizes across channels, as LayerNormalization does).
        Zeroing the producer and member parts silences the channel instead:
        it is zero wherever it flows, as long as the activations on its way
        keep zero at zero (ReLU, swish, tanh; not sigmoid).

        Args:
            channel: a group channel index, from 0 to `size - 1`.
            roles: the roles to include, among `"producer"`, `"member"` and
                `"consumer"` (default: all).

        Returns:
            A list of `(layer, weight, axis, indices)`, one per slice in
            which the channel has positions, in the order of `slices`:
            `np.take(weight_array, indices, axis)` is the channel's part.

        Raises:
            TypeError: if `channel` is not an integer.
            ValueError: if `channel` is out of range or a role is unknown.

        Example:

        >>> group = tfsparse.surgery.dependency_groups(model)[1]  # conv2 + conv3, added
        >>> group.producers
        ('conv2', 'conv3')
        >>> for layer, weight, axis, indices in group.slices_of(3, roles=("producer",)):
        ...     variable = next(w for w in model.get_layer(layer).weights if w.name == weight)
        ...     array = keras.ops.convert_to_numpy(variable)
        ...     array[(slice(None),) * axis + (list(indices),)] = 0.0
        ...     _ = variable.assign(array)
        >>> float(np.abs(model.get_layer("conv3").kernel.numpy()[..., 3]).sum())
        0.0
        """
        if not isinstance(channel, numbers.Integral) or isinstance(channel, bool):
            raise TypeError(f"Argument `channel` must be an integer, received: {channel!r}.")
        if not 0 <= channel < self.size:
            raise ValueError(
                f"Argument `channel` must be from 0 to {self.size - 1} (the group has {self.size} channels), "
                f"received: {channel}."
            )
        if isinstance(roles, str) or not set(roles) <= set(ROLES):
            raise ValueError(f"Argument `roles` must be a sequence of roles among {list(ROLES)}, received: {roles!r}.")
        return [(s.layer, s.weight, s.axis, s.positions[channel]) for s in self.slices
                if s.role in roles and s.positions[channel]]


@dataclasses.dataclass
class LayerChannels:
    """The channels around one layer, as node arrays (see `ChannelGraph`).

    Attributes:
        layer: the Keras operation.
        rule: its `channel_rules.ChannelRule`, or `None` if it is unsupported.
        inputs: per call, the channel arrays of its input tensors.
        outputs: per call, the channel arrays of its output tensors.
        mid: per call, the depthwise outputs of a SeparableConv (else `None`).
    """

    layer: object
    rule: object
    inputs: list = dataclasses.field(default_factory=list)
    outputs: list = dataclasses.field(default_factory=list)
    mid: list = dataclasses.field(default_factory=list)

    def arrays(self):
        """Every channel array of every call."""
        return [a for call in (*self.inputs, *self.outputs) for a in call] + [m for m in self.mid if m is not None]


class ChannelGraph:
    """Channel nodes of a functional model, joined where channels are tied.

    After construction, every array in `layers` holds, for each position of
    a tensor's channel axis, the id of its connected set of nodes (its
    "root"): two positions with the same root are the same channel for
    surgery. `pins` maps the roots that cannot be removed to the reason.

    Args:
        model: a built functional or Sequential model. tfsparse wrappers are
            unwrapped first (masks and gates folded in, see
            `tfsparse.surgery.unwrap_layers`); `model` is then the stripped
            model, whose layers carry the inner layers' names.

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if `model` is not built or has no functional graph.
    """

    def __init__(self, model):
        self.model = plain_model(model)
        self._parent = []
        self._pin_reasons = []  # (node, reason)
        self.layers = {}  # name -> LayerChannels
        self.produced = {}  # producer name -> node array of its output channels
        self._walk(graph_view(self.model))
        self._finish()

    # Union-find over channel nodes.
    def _new(self, count):
        start = len(self._parent)
        self._parent.extend(range(start, start + count))
        return np.arange(start, start + count, dtype=np.int64)

    def _find(self, node):
        parent = self._parent
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    def _join(self, a, b):
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self._find(x), self._find(y)
            if rx != ry:
                self._parent[max(rx, ry)] = min(rx, ry)

    def _pin(self, array, reason):
        self._pin_reasons.extend((int(n), reason) for n in array)

    def _source(self, width, reason):
        nodes = self._new(width)
        self._pin(nodes, reason)
        return nodes

    def _walk(self, view):
        self.order = {op.name: i for i, op in enumerate(view.operations)}
        arrays = {}
        for i, tensor in enumerate(view.inputs):
            arrays[id(tensor)] = self._source(_width(tensor), f"comes from model input {i} ({tensor.name!r})")
        for node in model_calls(view):
            self._call(node, arrays)
        for i, tensor in enumerate(view.outputs):
            self._pin(arrays[id(tensor)], f"is model output {i}")

    def _call(self, node, arrays):
        layer = node.operation
        inputs = [arrays[id(t)] for t in node.input_tensors]
        rank = len(node.input_tensors[0].shape) if node.input_tensors else 0
        try:
            rule = rules.channel_rule(layer, rank)
            outputs, mid = self._apply(layer, rule, node, inputs)
        except channel_rules.Unsupported as error:
            rule, mid = None, None
            reason = f"reaches {error}"
            for array in inputs:
                self._pin(array, reason)
            outputs = [self._source(_width(t), f"comes out of {error}") for t in node.output_tensors]
        info = self.layers.get(layer.name)
        if info is None:
            info = self.layers[layer.name] = LayerChannels(layer, rule)
        elif rule is not None and (rule.axes or rule.width):
            # A layer called again shares its weights: its channels are tied
            # call by call.
            for old, new in zip([*info.inputs[0], *info.outputs[0]], [*inputs, *outputs]):
                self._join(old, new)
        info.inputs.append(inputs)
        info.outputs.append(outputs)
        info.mid.append(mid)
        for tensor, array in zip(node.output_tensors, outputs):
            arrays[id(tensor)] = array

    def _apply(self, layer, rule, node, inputs):
        """Output channel arrays (and SeparableConv's middle ones) of one call."""
        widths = [_width(t) for t in node.output_tensors]
        name = f"{type(layer).__name__} {layer.name!r}"
        if len(widths) != 1:
            raise channel_rules.Unsupported(f"{name}, which has {len(widths)} outputs")
        (width,) = widths
        mid = None
        if rule.kind in (channel_rules.PRODUCE, channel_rules.SEPARABLE):
            if rule.kind == channel_rules.SEPARABLE:
                mid = np.repeat(inputs[0], layer.depth_multiplier)
            elif not any(a.channels == channel_rules.IN for a in rule.axes):
                for array in inputs:
                    self._pin(array, f"is read as indices by {name}")
            if layer.name not in self.produced:
                self.produced[layer.name] = self._new(width)
            output = self.produced[layer.name]
        elif rule.kind == channel_rules.FOLLOW:
            output = inputs[0]
        elif rule.kind == channel_rules.REPEAT:
            output = np.repeat(inputs[0], layer.depth_multiplier)
        elif rule.kind == channel_rules.CONCAT:
            output = np.concatenate(inputs)
        elif rule.kind == channel_rules.FLATTEN:
            spatial = node.input_tensors[0].shape[1:-1]
            if any(d is None for d in spatial):
                raise channel_rules.Unsupported(f"{name}, whose input has an unknown spatial size {spatial}")
            output = np.tile(inputs[0], math.prod(spatial))
        else:  # COUPLE: elementwise over inputs of the output's width
            full = [a for a in inputs if len(a) == width]
            if not full:
                raise channel_rules.Unsupported(f"{name}, which broadcasts every input along the channel axis")
            for array in inputs:
                if len(array) != width:
                    self._pin(array, f"is broadcast by {name}")
            for array in full[1:]:
                self._join(full[0], array)
            output = full[0]
        if len(output) != width:
            raise channel_rules.Unsupported(f"{name}, which changes the channel axis ({len(output)} -> {width} channels)")
        return [output], mid

    def _finish(self):
        """Replaces every node by its root and gathers the pins by root."""
        parent = np.asarray(self._parent, dtype=np.int64)
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        self.root = parent
        self.pins = {}
        for node, reason in self._pin_reasons:
            self.pins.setdefault(int(parent[node]), reason)
        for info in self.layers.values():
            info.inputs = [[parent[a] for a in call] for call in info.inputs]
            info.outputs = [[parent[a] for a in call] for call in info.outputs]
            info.mid = [None if m is None else parent[m] for m in info.mid]
        self.produced = {name: parent[nodes] for name, nodes in self.produced.items()}

    def producer_roots(self, name, argument):
        """Roots of the output channels of producer `name`.

        Raises:
            ValueError: naming `argument`, if `name` is not a producer.
        """
        if name not in self.produced:
            known = "a layer of the model" if name in self.layers else "not a layer of the model"
            raise ValueError(
                f"Argument `{argument}` names {name!r}, which is {known} but not a producer of channels. "
                f"Producers: {sorted(self.produced)}."
            )
        return self.produced[name]

    def groups(self):
        """Returns the `ChannelGroup`s of the model, in model order."""
        return [group for group, _ in self.grouped]

    def group_roots(self, group, argument):
        """Roots of the channels of `group`, in group order.

        Raises:
            ValueError: naming `argument`, if `group` is not a group of the model.
        """
        for known, roots in self.grouped:
            if known == group:
                return roots
        raise ValueError(
            f"Argument `{argument}` holds {group!r}, which is not a channel group of model {self.model.name!r} "
            f"(its layers, widths or couplings differ); take the groups from `dependency_groups(model)` of the "
            f"same model."
        )

    @functools.cached_property
    def grouped(self):
        """`(ChannelGroup, roots of its channels)` pairs, in model order."""
        order = self.order
        by_root = {}
        for name, nodes in self.produced.items():
            for c, root in enumerate(nodes.tolist()):
                by_root.setdefault(root, []).append((name, c))
        # Producers that share a root are in one group.
        group_of = {name: name for name in self.produced}

        def find(name):
            while group_of[name] != name:
                group_of[name] = group_of[group_of[name]]
                name = group_of[name]
            return name

        for pairs in by_root.values():
            for other, _ in pairs[1:]:
                a, b = find(pairs[0][0]), find(other)
                if a != b:
                    group_of[max(a, b, key=order.get)] = min(a, b, key=order.get)
        grouped = {}
        for name in self.produced:
            grouped.setdefault(find(name), []).append(name)
        groups = [sorted(names, key=order.get) for names in
                  sorted(grouped.values(), key=lambda names: min(map(order.get, names)))]
        roots = [list(dict.fromkeys(r for name in names for r in self.produced[name].tolist())) for names in groups]
        group_of_root = np.full(len(self.root), -1, dtype=np.int64)
        channel_of_root = np.full(len(self.root), -1, dtype=np.int64)
        for index, group_roots in enumerate(roots):
            group_of_root[group_roots] = index
            channel_of_root[group_roots] = np.arange(len(group_roots))
        readers = [([], []) for _ in groups]  # (consumers, members) of each group
        slices = [[] for _ in groups]
        for name in sorted(self.layers, key=order.get):
            info = self.layers[name]
            inputs = [a for call in info.inputs for a in call]
            if info.rule is None or not inputs:
                continue
            touched = np.unique(group_of_root[np.concatenate(inputs)])
            for index in touched[touched >= 0].tolist():
                if any(a.summed for a in info.rule.axes):
                    readers[index][0].append(name)
                elif info.rule.axes or info.rule.width:
                    readers[index][1].append(name)
            for index, weight_slice in _weight_slices(info, group_of_root, channel_of_root, list(map(len, roots))):
                slices[index].append(weight_slice)
        return [(self._group(*args, by_root, order), np.asarray(args[1], dtype=np.int64))
                for args in zip(groups, roots, readers, slices)]

    def _group(self, producers, roots, readers, slices, by_root, order):
        pinned = frozenset(i for i, r in enumerate(roots) if r in self.pins)
        reasons = list(dict.fromkeys(self.pins[roots[i]] for i in sorted(pinned)))
        return ChannelGroup(
            producers=tuple(producers),
            consumers=tuple(readers[0]),
            members=tuple(readers[1]),
            channels=tuple(tuple(sorted(by_root[r], key=lambda p: (order[p[0]], p[1]))) for r in roots),
            slices=tuple(slices),
            pinned=pinned,
            reason="; ".join(reasons) if reasons else None,
        )


def _weight_slices(info, group_of_root, channel_of_root, sizes):
    """`(group index, WeightSlice)` pairs of one layer, in the order of its rule's weight axes."""
    weights = {w.name: w for w in info.layer.weights}
    # The first call: the channels of later calls are tied to it.
    first_call = {channel_rules.IN: info.inputs[0][0], channel_rules.MID: info.mid[0], channel_rules.OUT: info.outputs[0][0]}
    for axis in info.rule.axes:
        nodes = first_call[axis.channels]
        groups, channels = group_of_root[nodes], channel_of_root[nodes]
        role = _role(info.rule, axis)
        for index in np.unique(groups[groups >= 0]).tolist():
            positions = [[] for _ in range(sizes[index])]
            for position in np.flatnonzero(groups == index).tolist():
                positions[channels[position]].append(position)
            yield index, WeightSlice(
                layer=info.layer.name,
                weight=axis.weight,
                axis=axis.axis % len(weights[axis.weight].shape),
                role=role,
                positions=tuple(map(tuple, positions)),
            )


def _role(rule, axis):
    """The `WeightSlice` role of a weight axis of a layer with `rule`."""
    if axis.summed:
        return CONSUMER
    if axis.channels == channel_rules.OUT and rule.kind in (channel_rules.PRODUCE, channel_rules.SEPARABLE):
        return PRODUCER
    return MEMBER


def dependency_groups(model):
    """Returns the groups of coupled channels of a functional or Sequential model.

    Conv/Dense output channels flow through normalization, activations,
    pooling and dropout; `Add`, `Subtract`, `Multiply`, `Maximum`, `Minimum`
    and `Average` tie their inputs together; `Concatenate` offsets channels;
    DepthwiseConv follows its input; `Flatten` spreads channel `c` over
    `c + k*C`. A layer the graph cannot map channel by channel (a Reshape
    that changes the last axis, a Lambda, a custom layer, a nested model)
    pins the channels that reach it, and the group's `reason` says so. The
    model's outputs and inputs are always pinned.

    Args:
        model: a built functional or Sequential `keras.Model`. tfsparse
            wrappers are stripped first, so name their inner layers.

    Returns:
        A list of `ChannelGroup`, one per set of tied producers, in model
        order (groups with every channel pinned included; see `prunable`).

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if `model` is not built or is a subclassed model.

    Example:

    >>> groups = tfsparse.surgery.dependency_groups(model)
    >>> [(g.producers, g.size) for g in groups if g.prunable]
    [(('conv1',), 16), (('conv2', 'conv3'), 32)]
    """
    return ChannelGraph(model).groups()


def _width(tensor):
    return int(tensor.shape[-1]) if tensor.shape and tensor.shape[-1] is not None else 0


def model_calls(view):
    """The calls of a functional model, each after the calls it reads from."""
    inputs = {id(t) for t in view.inputs}
    order, done = [], set()
    stack = [producing_call(t) for t in reversed(view.outputs) if id(t) not in inputs]
    while stack:
        node = stack[-1]
        if id(node) in done:
            stack.pop()
            continue
        parents = (producing_call(t) for t in node.input_tensors if id(t) not in inputs)
        pending = [p for p in parents if id(p) not in done]
        if pending:
            stack.extend(pending)
        else:
            done.add(id(node))
            order.append(node)
            stack.pop()
    return order


def checked_model(model):
    """Returns `model` if it is a built functional or Sequential model.

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if `model` is not built or is a subclassed model.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Argument `model` must be a functional or Sequential keras.Model, "
            f"received: {model!r} (of type {type(model).__name__})."
        )
    check_built(model)
    if not is_graph_model(model):
        raise ValueError(
            f"Argument `model` ({type(model).__name__} {model.name!r}) is a subclassed model, which has no "
            f"layer graph to read; build it as a functional or Sequential model."
        )
    return model


def plain_model(model):
    """`model` checked, with tfsparse wrappers stripped if it holds any."""
    model = checked_model(model)
    return unwrap_layers(model) if wrappers(model) else model


def graph_view(model):
    """A functional model over the same layers as `model` (itself if functional).

    Raises:
        ValueError: for a Sequential model without an input shape.
    """
    if not isinstance(model, keras.Sequential):
        return model
    try:
        inputs, outputs = model.inputs, model.outputs
        return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs[0] if len(outputs) == 1 else outputs)
    except ValueError as error:
        raise ValueError(
            f"Argument `model` (Sequential {model.name!r}) has no input shape, so no graph: "
            f"start it with `keras.Input(shape)` or build it with `model.build(input_shape)`. ({error})"
        ) from error
