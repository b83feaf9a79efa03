"""The public API imports and is what __all__ says."""

import thermosgd


def test_public_api():
    for name in thermosgd.__all__:
        assert hasattr(thermosgd, name), name
    assert thermosgd.__version__ == "0.2.0"
    config = thermosgd.IsotropicConfig(protocol="fixed-lr", learning_rates=(0.01,),
                                       weight_decays=(0.01,), iterations=100_000)
    assert config.grid_size == 1
    assert thermosgd.make_protocol("fixed-lr", 0.1, 0.01).potential == "G"


def test_network_api():
    import thermosgd.nn as tnn

    for name in tnn.__all__:
        assert hasattr(tnn, name), name
    config = tnn.TrainConfig(protocol="fixed-sphere", learning_rate=0.01, radius=2.0,
                             model="resnet18")
    assert config.width == 4 and config.hyperparameters == (0.01, 2.0)


def test_train_config_takes_numpy_numbers_and_refuses_bad_seeds():
    import numpy as np
    import pytest

    from thermosgd.nn import TrainConfig

    config = TrainConfig(protocol="fixed-lr", learning_rate=np.float32(0.1),
                         weight_decay=np.float64(1e-3), seed=np.int64(3))
    assert isinstance(config.learning_rate, float) and config.seed == 3
    for seed in (-1, 0.5, True):
        with pytest.raises(ValueError, match="seed"):
            TrainConfig(protocol="fixed-lr", learning_rate=0.1, weight_decay=1e-3, seed=seed)
