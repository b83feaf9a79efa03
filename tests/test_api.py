"""The public API imports and is what __all__ says."""

import thermosgd


def test_public_api():
    for name in thermosgd.__all__:
        assert hasattr(thermosgd, name), name
    assert thermosgd.__version__ == "0.1.0"
    config = thermosgd.IsotropicConfig(protocol="fixed-lr", learning_rates=(0.01,),
                                       weight_decays=(0.01,), iterations=100_000)
    assert config.grid_size == 1
    assert thermosgd.make_protocol("fixed-lr", 0.1, 0.01).potential == "G"
