"""The model families the train stage builds, chosen by ``train.model.architecture``.

Each family is one ``make_*`` function of ``(input_shape, num_classes, params)``. Every model takes
images as ``data/processed`` stores them (uint8 pixels) and scales them itself, so a saved model
needs nothing outside its file to classify an image.
"""

from __future__ import annotations

import keras

from pipeline.params import DenseModelParams, ModelParams


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


FAMILIES = {"dense": make_dense}


def make_model(input_shape: tuple[int, ...], num_classes: int, params: ModelParams) -> keras.Model:
    """The model of ``params.architecture``, uncompiled."""
    return FAMILIES[params.architecture](input_shape, num_classes, params)
