"""Fused backbones (``-b a+b``): the ref a fused name resolves to, and the one-line errors of
bad fused names and of everything that needs one network (no torch, no images: quick)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from headstart.backbones import fuse, get_spec, require_single, resolve_backbone
from headstart.backbones.registry import unweighted_ref
from headstart.backbones.spec import split_name
from headstart.cli.main import main
from headstart.errors import BackboneError, ConfigError, HeadstartError

FUSED = "mobilenet_v2+efficientnet_lite0"


def test_a_fused_name_resolves_each_part_and_keys_its_own_caches() -> None:
    mobile, lite = resolve_backbone("mobilenet_v2"), resolve_backbone("efficientnet_lite0")
    ref = resolve_backbone(FUSED)
    assert ref.is_fused and not mobile.is_fused
    assert ref.parts == (mobile, lite) and ref.members == (mobile, lite)
    assert mobile.members == (mobile,)
    assert ref.name == FUSED and ref.weights_path is None
    assert ref.feature_dim == 2560 == mobile.feature_dim + lite.feature_dim  # type: ignore[operator]
    # documented: the first part's; fused code paths use each part's own
    assert ref.preprocessing == mobile.preprocessing != lite.preprocessing
    # its digest is none of its parts', and depends on their order
    assert ref.weights_sha256 not in (mobile.weights_sha256, lite.weights_sha256)
    assert resolve_backbone("efficientnet_lite0+mobilenet_v2").weights_sha256 != ref.weights_sha256
    # spaces around '+' are allowed; the name is the canonical one
    assert resolve_backbone(" mobilenet_v2 + efficientnet_lite0 ") == ref


def test_fuse_flattens_keeps_one_ref_as_it_is_and_refuses_a_repeat() -> None:
    mobile, lite = resolve_backbone("mobilenet_v2"), resolve_backbone("efficientnet_lite0")
    assert fuse([mobile]) is mobile
    assert fuse([fuse([mobile, lite])]) == fuse([mobile, lite])
    with pytest.raises(BackboneError, match="'mobilenet_v2' appears twice"):
        fuse([fuse([mobile, lite]), mobile])
    with pytest.raises(BackboneError, match="at least one"):
        fuse([])


@pytest.mark.parametrize(
    ("name", "error", "needle"),
    [
        ("mobilenet_v2++efficientnet_lite0", BackboneError, "has an empty part"),
        ("mobilenet_v2+", BackboneError, "has an empty part"),
        ("mobilenet_v2+mobilenet_v2", BackboneError, "'mobilenet_v2' appears twice"),
        ("mobilenet_v2+resnet1", BackboneError, "unknown backbone 'resnet1'"),
    ],
)
def test_bad_fused_names_are_one_line(name: str, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle) as info:
        resolve_backbone(name)
    assert "\n" not in str(info.value)


def test_a_weights_file_does_not_fit_a_fusion(tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(ConfigError, match="fits one backbone, not the fused") as info:
        resolve_backbone(FUSED, weights)
    assert "\n" not in str(info.value)


def test_what_needs_one_network_says_so_in_one_line() -> None:
    ref = resolve_backbone(FUSED)
    with pytest.raises(
        BackboneError, match=re.escape(f"needs one backbone; got the fused '{FUSED}'")
    ):
        ref.build()
    with pytest.raises(BackboneError, match="training from scratch needs one backbone"):
        unweighted_ref(FUSED)
    with pytest.raises(BackboneError, match="needs one backbone"):
        split_name(FUSED)
    with pytest.raises(BackboneError) as info:
        require_single(FUSED, "testing")
    assert str(info.value) == (
        f"testing needs one backbone; got the fused '{FUSED}': use one of its parts "
        "(mobilenet_v2, efficientnet_lite0)"
    )
    require_single("mobilenet_v2", "testing")  # one backbone: nothing to say
    require_single(resolve_backbone("mobilenet_v2"), "testing")


def test_a_fused_spec_sums_its_parts() -> None:
    spec = get_spec("mobilenet_v2+efficientnet_lite2")
    mobile, lite = get_spec("mobilenet_v2"), get_spec("efficientnet_lite2")
    assert spec.name == "mobilenet_v2+efficientnet_lite2"
    assert spec.feature_dim == 2560 and spec.params == mobile.params + lite.params  # type: ignore[operator]
    assert spec.imagenet_top1 is None and spec.preprocessing == mobile.preprocessing
    assert "mobilenet_v2 + efficientnet_lite2" in spec.description


def test_ranking_a_fusion_is_refused_before_any_scan(tmp_path: Path) -> None:
    from headstart.ranking import rank_backbones

    with pytest.raises(HeadstartError, match="rank its parts one by one") as info:
        rank_backbones(tmp_path / "nowhere", backbones=["mobilenet_v2", FUSED])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-b", "mobilenet_v2+mobilenet_v2"], "appears twice"),
        (["-b", FUSED, "--strategy", "finetune"], "fine-tuning needs one backbone"),
        (["-b", FUSED, "--weights", "W"], "fits one backbone, not the fused"),
    ],
)
def test_the_cli_answers_bad_fusions_with_one_line_and_exit_2(
    args: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
    (tmp_path / "W").write_bytes(b"x")
    args = [str(tmp_path / "W") if a == "W" else a for a in args]
    code = main(["fit", str(data), "-o", str(tmp_path / "run"), "-q", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run" / "model").exists()


def test_lr_find_on_a_fusion_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["lr-find", str(tmp_path), "-b", FUSED, "-o", str(tmp_path / "lr")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "the learning-rate finder needs one backbone" in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "lr").exists()
