"""The model families the train stage builds, chosen by ``train.model.architecture``.

Each family is one ``make_*`` function of ``(input_shape, num_classes, params)`` and one schema
class in :mod:`pipeline.core.params`. Every model takes images as ``data/processed`` stores them (uint8
pixels) and scales them itself, so a saved model needs nothing outside its file to classify an image.
"""

from __future__ import annotations

import keras

from pipeline.core.params import CnnModelParams, DenseModelParams, ModelParams


def pixel_scaling() -> keras.layers.Layer:
    """uint8 pixels to float32 in [0, 1] by dividing by 255, inside the model.

    A ``Normalization`` with mean 0 and variance 255² divides, as the tutorial's ``x / 255.0``
    does. ``Rescaling(1 / 255)`` multiplies by float32(1/255) instead, which rounds 126 of the 256
    pixel values differently and changes the trained weights from the second epoch on.
    """
    return keras.layers.Normalization(mean=0.0, variance=255.0**2, name="scale_pixels")


def make_dense(input_shape: tuple[int, ...], num_classes: int, params: DenseModelParams) -> keras.Model:
    """The tutorial's net: Flatten, then ``Dense(units, activation)`` and ``Dropout`` per hidden
    layer, softmax."""
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    x = keras.layers.Flatten(name="flatten")(pixel_scaling()(inputs))
    for number, units in enumerate(params.hidden_units, start=1):
        x = keras.layers.Dense(units, activation=params.activation, name=f"hidden_{number}")(x)
        if params.dropout:
            x = keras.layers.Dropout(params.dropout, name=f"dropout_{number}")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="fashion_dense")


def make_cnn(input_shape: tuple[int, ...], num_classes: int, params: CnnModelParams) -> keras.Model:
    """Blocks of ``convs_per_block`` convolutions (``kernel_size``, ReLU, optional BatchNorm), 2x2 max
    pooling and dropout, then an optional dense head and a float32 softmax.

    Augmentation layers act in training only; ``precision`` sets the compute dtype of every layer
    between the float32 pixel scaling and the float32 softmax.
    """
    dtype = params.precision
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    x = keras.layers.Reshape((*input_shape, 1), name="add_channel")(pixel_scaling()(inputs))
    if params.augment.shift:
        x = keras.layers.RandomTranslation(  # nearest: whole pixels moved, never blurred
            params.augment.shift,
            params.augment.shift,
            fill_mode="constant",
            interpolation="nearest",
            name="random_shift",
        )(x)
    if params.augment.flip:
        x = keras.layers.RandomFlip("horizontal", name="random_flip")(x)
    for block, filters in enumerate(params.filters, start=1):
        for conv in range(1, params.convs_per_block + 1):
            name = f"block{block}_conv{conv}"
            x = keras.layers.Conv2D(
                filters,
                params.kernel_size,
                padding="same",
                use_bias=not params.batch_norm,
                activation=None if params.batch_norm else "relu",
                dtype=dtype,
                name=name,
            )(x)
            if params.batch_norm:
                x = keras.layers.BatchNormalization(dtype=dtype, name=f"{name}_bn")(x)
                x = keras.layers.Activation("relu", dtype=dtype, name=f"{name}_relu")(x)
        x = keras.layers.MaxPooling2D(dtype=dtype, name=f"block{block}_pool")(x)
        if params.block_dropout:
            x = keras.layers.Dropout(params.block_dropout, dtype=dtype, name=f"block{block}_dropout")(x)
    x = keras.layers.Flatten(dtype=dtype, name="flatten")(x)
    if params.dense_units:
        x = keras.layers.Dense(params.dense_units, activation="relu", dtype=dtype, name="dense")(x)
        if params.dense_dropout:
            x = keras.layers.Dropout(params.dense_dropout, dtype=dtype, name="dense_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="output")(x)
    return keras.Model(inputs, outputs, name="fashion_cnn")


FAMILIES = {"dense": make_dense, "cnn": make_cnn}


def make_model(input_shape: tuple[int, ...], num_classes: int, params: ModelParams) -> keras.Model:
    """The model of ``params.architecture`` built from that family's params, uncompiled."""
    return FAMILIES[params.architecture](input_shape, num_classes, params.family)
