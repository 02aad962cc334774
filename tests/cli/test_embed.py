"""``headstart embed``: a labelled data set or images without labels into the cache, and
``--like`` asks the store for the images nearest one; bad input is one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from headstart.cli.main import main
from headstart.demo import demo_data_dir


@pytest.fixture(autouse=True)
def _shared(shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's cache: its ONNX export (and embedded demo photos) are reused."""
    monkeypatch.setenv("HEADSTART_CACHE", str(shared_cache))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_embed_fills_the_cache_and_finds_the_nearest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = demo_data_dir()
    query = next((data / "test" / "hat").glob("*.jpg"))
    code, out, _ = _run(capsys, "embed", str(data), "-q", "--like", str(query), "-k", "3")
    assert code == 0, out
    lines = out.strip().splitlines()
    assert "images embedded" in lines[0] and "0 failed" in lines[0]
    # the query itself is in the data: it comes first, at distance 0
    assert lines[1].split() == ["0.0000", str(query)]
    assert len(lines) == 4 and all(float(line.split()[0]) > 0 for line in lines[2:])
    code, out, _ = _run(capsys, "embed", str(data), "-q")
    assert code == 0 and " 0 images embedded" in out and "cached already" in out


def test_embed_unlabelled_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for photo in sorted((demo_data_dir() / "train" / "hat").glob("*.jpg"))[:3]:
        shutil.copy(photo, flat / photo.name)
    code, _, err = _run(capsys, "embed", str(flat), "-q")
    assert code == 2 and "add --unlabelled" in err and len(err.strip().splitlines()) == 1
    code, out, _ = _run(capsys, "embed", str(flat), "-q", "--unlabelled")
    assert code == 0 and "0 failed" in out
    assert (
        out.count("images embedded") == 1
        and "3 cached already" in _run(capsys, "embed", str(flat), "-q", "--unlabelled")[1]
    )


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--like", "/no/such.jpg"], "no such image"),
        (["--engine", "spark"], "spark"),
        (["--address", "auto"], "--engine ray"),
    ],
)
def test_bad_input_is_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "embed", str(demo_data_dir()), "-q", *argv)
    assert code == 2 and needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
