"""Config layering and validation: defaults < YAML < --set, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from headstart.config import load_config
from headstart.errors import ConfigError, PathNotFoundError


def test_defaults_are_the_documented_ones() -> None:
    cfg = load_config()
    assert cfg.backbone.name == "mobilenet_v2"
    assert cfg.head.kind == "logistic"
    assert cfg.data.val_fraction == 0.15


def test_yaml_then_overrides_win(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("head:\n  kind: mlp\ndata:\n  seed: 4\n")
    cfg = load_config(path, ["head.kind=knn", "head.params.n_neighbors=7"])
    assert cfg.head.kind == "knn"
    assert cfg.head.params == {"n_neighbors": 7}
    assert cfg.data.seed == 4


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("data.val_fraction=2", "val_fraction"),
        ("head.nope=1", "head.nope"),
        ("novalue", "KEY=VALUE"),
    ],
)
def test_bad_values_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(overrides=[override])


def test_missing_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(PathNotFoundError):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_config_is_frozen() -> None:
    cfg = load_config()
    with pytest.raises(Exception, match="frozen"):
        cfg.data.seed = 3  # type: ignore[misc]
