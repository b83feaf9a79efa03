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
