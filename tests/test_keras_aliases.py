"""Keras's names and module paths: each exists in pydl and is the right object."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

import pydl
from pydl import (activations, callbacks, initializers, layers, losses, metrics, models, optimizers, regularizers,
                  schedules, utils)


@pytest.mark.parametrize("alias,target", [
    ("MaxPooling2D", "MaxPool2D"), ("AveragePooling2D", "AvgPool2D"),
    ("GlobalAvgPool2D", "GlobalAveragePooling2D"), ("GlobalAvgPool1D", "GlobalAveragePooling1D"),
])
def test_layer_aliases(alias, target):
    assert getattr(layers, alias) is getattr(layers, target)


def test_layer_names_and_input():
    for name in ["Dense", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Dropout", "BatchNormalization",
                 "Flatten", "Reshape", "Conv2D", "Conv2DTranspose", "UpSampling2D", "Add", "Subtract", "Multiply",
                 "Concatenate", "SimpleRNN", "LSTM", "GRU", "Embedding", "LayerNormalization",
                 "MultiHeadAttention", "Layer"]:
        assert isinstance(getattr(layers, name), type), name
    assert layers.Input is pydl.Input


def test_module_paths():
    assert importlib.import_module("pydl.optimizers.schedules") is schedules
    assert optimizers.schedules is schedules
    assert optimizers.schedules.ExponentialDecay is schedules.ExponentialDecay
    assert utils.to_categorical is pydl.data.to_categorical
    assert models.Sequential is pydl.Sequential and models.load_model is pydl.load_model
    assert pydl.activations is activations and pydl.interop.load_torch_state_dict is not None


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Nadam"])
def test_optimizer_names(name):
    cls = getattr(optimizers, name)
    assert type(optimizers.get(name.lower())) is cls


@pytest.mark.parametrize("name,alias", [
    ("MeanSquaredError", "mse"), ("MeanAbsoluteError", "mae"), ("BinaryCrossentropy", "binary_crossentropy"),
    ("CategoricalCrossentropy", "categorical_crossentropy"),
    ("SparseCategoricalCrossentropy", "sparse_categorical_crossentropy"),
])
def test_loss_classes_and_names(name, alias):
    cls = getattr(losses, name)
    assert issubclass(cls, losses.Loss)
    assert type(losses.get(alias)) is cls and type(losses.get(name)) is cls


def test_loss_functions_are_per_sample():
    rng = np.random.default_rng(0)
    t = rng.random((4, 3))
    p = rng.random((4, 3))
    np.testing.assert_allclose(losses.mean_squared_error(t, p), ((t - p) ** 2).mean(1))
    np.testing.assert_allclose(losses.mean_absolute_error(t, p), np.abs(t - p).mean(1))
    assert losses.binary_crossentropy(t, p).shape == (4,)
    pr = p / p.sum(1, keepdims=True)
    oh = np.eye(3)[[0, 2, 1, 1]]
    np.testing.assert_allclose(losses.categorical_crossentropy(oh, pr), -np.log(pr[np.arange(4), [0, 2, 1, 1]]))
    np.testing.assert_allclose(losses.sparse_categorical_crossentropy([0, 2, 1, 1], pr),
                               losses.categorical_crossentropy(oh, pr))
    assert np.mean(losses.binary_crossentropy(t, p)) == pytest.approx(losses.BinaryCrossentropy()(t, p), rel=1e-6)


@pytest.mark.parametrize("name", ["AUC", "Precision", "Recall", "TruePositives", "FalsePositives", "TrueNegatives",
                                  "FalseNegatives", "BinaryAccuracy", "CategoricalAccuracy",
                                  "SparseCategoricalAccuracy", "TopKCategoricalAccuracy", "MeanSquaredError",
                                  "MeanAbsoluteError"])
def test_metric_classes(name):
    cls = getattr(metrics, name)
    assert issubclass(cls, metrics.Metric)
    m = cls()
    assert hasattr(m, "update_state") and hasattr(m, "result") and hasattr(m, "reset_state")


def test_mean_metric_classes_accumulate():
    m = metrics.BinaryAccuracy()
    m.update_state([[1], [0]], [[0.9], [0.8]])
    m.update_state([[1], [0], [0], [1]], [[0.9], [0.1], [0.2], [0.7]])
    assert m.result() == pytest.approx(5 / 6)
    s = metrics.SparseCategoricalAccuracy()
    assert s([0, 1], [[0.9, 0.1], [0.8, 0.2]]) == pytest.approx(0.5)
    e = metrics.MeanSquaredError()
    e.update_state(np.zeros((2, 2)), np.ones((2, 2)))
    e.update_state(np.zeros((2, 2)), np.zeros((2, 2)))
    assert e.result() == pytest.approx(0.5)
    e.reset_state()
    assert e.result() == 0.0


@pytest.mark.parametrize("name", ["accuracy", "acc", "binary_accuracy", "categorical_accuracy",
                                  "sparse_categorical_accuracy", "top_k_accuracy", "mse", "mae", "auc", "AUC",
                                  "precision", "recall"])
def test_metric_names_resolve(name):
    display, fn = metrics.get(name)
    assert callable(fn)


@pytest.mark.parametrize("name", ["Callback", "History", "EarlyStopping", "ReduceLROnPlateau",
                                  "LearningRateScheduler", "ModelCheckpoint", "CSVLogger", "TerminateOnNaN",
                                  "LambdaCallback", "ProgbarLogger"])
def test_callback_names(name):
    assert issubclass(getattr(callbacks, name), callbacks.Callback)


@pytest.mark.parametrize("cls,snake", [
    ("Zeros", "zeros"), ("Ones", "ones"), ("Constant", "constant"), ("RandomNormal", "random_normal"),
    ("TruncatedNormal", "truncated_normal"), ("RandomUniform", "random_uniform"),
    ("VarianceScaling", "variance_scaling"), ("GlorotUniform", "glorot_uniform"), ("GlorotNormal", "glorot_normal"),
    ("HeUniform", "he_uniform"), ("HeNormal", "he_normal"), ("LecunUniform", "lecun_uniform"),
    ("LecunNormal", "lecun_normal"),
])
def test_initializer_names(cls, snake):
    c = getattr(initializers, cls)
    assert getattr(initializers, snake) is c
    assert isinstance(initializers.get(snake), c)


def test_regularizer_names():
    assert isinstance(regularizers.L1L2(l1=0.1, l2=0.2), regularizers.Regularizer)
    assert isinstance(regularizers.get("l2"), regularizers.L2)
    assert regularizers.l1_l2 is not None and regularizers.L1 is not None


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "softmax", "elu", "selu", "gelu", "swish", "silu",
                                  "softplus", "softsign", "hard_sigmoid", "exponential", "linear", "leaky_relu"])
def test_activation_functions(name):
    assert activations.get(name) is getattr(activations, name)
    assert layers.Dense(2, activation=name).activation in pydl.ops.ACTIVATIONS


@pytest.mark.parametrize("name", ["CosineDecay", "ExponentialDecay", "InverseTimeDecay", "PiecewiseConstantDecay",
                                  "PolynomialDecay", "LearningRateSchedule"])
def test_schedule_names(name):
    assert isinstance(getattr(optimizers.schedules, name), type)
