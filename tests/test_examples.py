"""Every config shipped in examples/ (and the embedded default) passes `softswitch check`."""

from pathlib import Path

import pytest

from softswitch.config import default_config_path, load_config

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", [default_config_path(), *EXAMPLES], ids=lambda p: p.name)
def test_shipped_config_is_valid(path):
    config = load_config(path)
    assert config.extensions
