"""$XMODAL_PRECISION and $XMODAL_DEVICE: the defaults of every command and of load_encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xmodal.cli import main
from xmodal.cli.parser import build_parser
from xmodal.encoders import hardware, load_encoder
from xmodal.encoders.settings import requested_device, requested_precision
from xmodal.errors import XmodalError

BAD_PRECISION = "XMODAL_PRECISION='fp8' is not one of auto, fp32, bf16, fp16"
BAD_DEVICE = "XMODAL_DEVICE='tpu' is not one of auto, cpu, cuda, cuda:N, mps"


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No inherited setting: the suite itself may run under XMODAL_PRECISION."""
    monkeypatch.delenv("XMODAL_PRECISION", raising=False)
    monkeypatch.delenv("XMODAL_DEVICE", raising=False)
    return monkeypatch


@pytest.mark.parametrize("value", ["auto", "fp32", "bf16", "fp16"])
def test_every_precision_is_taken_from_the_environment(clean_env, value: str) -> None:
    assert requested_precision() == "auto"
    clean_env.setenv("XMODAL_PRECISION", value)
    assert requested_precision() == value
    assert requested_precision("fp32") == "fp32"  # an explicit argument wins


@pytest.mark.parametrize("value", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_every_device_form_is_taken_from_the_environment(clean_env, value: str) -> None:
    assert requested_device() == "auto"
    clean_env.setenv("XMODAL_DEVICE", value)
    assert requested_device() == value
    assert requested_device("cpu") == "cpu"


def test_an_empty_variable_means_unset(clean_env) -> None:
    clean_env.setenv("XMODAL_PRECISION", "")
    clean_env.setenv("XMODAL_DEVICE", " ")
    assert (requested_precision(), requested_device()) == ("auto", "auto")


def test_bad_values_are_one_line_errors_naming_the_variable(clean_env) -> None:
    clean_env.setenv("XMODAL_PRECISION", "fp8")
    clean_env.setenv("XMODAL_DEVICE", "tpu")
    with pytest.raises(XmodalError) as precision_error:
        requested_precision()
    with pytest.raises(XmodalError) as device_error:
        requested_device()
    assert (str(precision_error.value), str(device_error.value)) == (BAD_PRECISION, BAD_DEVICE)
    for bad in ("cuda:", "cuda:x", "CPU"):
        clean_env.setenv("XMODAL_DEVICE", bad)
        with pytest.raises(XmodalError, match="XMODAL_DEVICE="):
            requested_device()


def test_the_cli_defaults_are_left_to_the_library(clean_env) -> None:
    """The flags default to None, so the environment is read when the encoder loads."""
    args = build_parser().parse_args(["search", "-c", "col", "dog"])
    assert (args.device, args.precision) == (None, None)


def test_load_encoder_reads_the_environment_at_call_time(clean_env, tiny_clip_dir: Path) -> None:
    clean_env.setenv("XMODAL_PRECISION", "fp16")
    clean_env.setenv("XMODAL_DEVICE", "cpu")
    spec = load_encoder(tiny_clip_dir).spec
    assert (spec.precision, spec.device) == ("fp16", "cpu")
    assert load_encoder(tiny_clip_dir, precision="fp32").spec.precision == "fp32"
    clean_env.setenv("XMODAL_PRECISION", "auto")
    expected = "bf16" if hardware.cpu_has_fast_bf16() else "fp32"
    assert load_encoder(tiny_clip_dir).spec.precision == expected


def test_load_encoder_refuses_a_bad_variable_before_loading(clean_env, tiny_clip_dir) -> None:
    clean_env.setenv("XMODAL_PRECISION", "fp8")
    with pytest.raises(XmodalError) as err:
        load_encoder(tiny_clip_dir, device="cpu")
    assert str(err.value) == BAD_PRECISION
    clean_env.setenv("XMODAL_PRECISION", "fp32")
    clean_env.setenv("XMODAL_DEVICE", "tpu")
    with pytest.raises(XmodalError) as err:
        load_encoder(tiny_clip_dir)
    assert str(err.value) == BAD_DEVICE


def index(tmp_path: Path, photo: Path, model: Path, *flags: str) -> list:
    folder = tmp_path / "photos"
    folder.mkdir(exist_ok=True)
    (folder / photo.name).write_bytes(photo.read_bytes())
    col = tmp_path / "col"
    argv = ["index", str(folder), "-c", str(col), "--model", str(model), "--workers", "0"]
    return [main([*argv, *flags]), col]


def test_the_cli_runs_in_the_precision_and_device_of_the_environment(
    clean_env, tmp_path: Path, tiny_clip_dir: Path, captioned_photos: list[Path], capsys
) -> None:
    clean_env.setenv("XMODAL_PRECISION", "fp16")
    clean_env.setenv("XMODAL_DEVICE", "cpu")
    code, col = index(tmp_path, captioned_photos[0], tiny_clip_dir)
    assert code == 0, capsys.readouterr().err
    spec = json.loads((col / "manifest.json").read_text())["encoder_spec"]
    assert (spec["precision"], spec["device"]) == ("fp16", "cpu")


def test_the_cli_reports_a_bad_variable_in_one_line_and_flags_win(
    clean_env, tmp_path: Path, tiny_clip_dir: Path, captioned_photos: list[Path], capsys
) -> None:
    clean_env.setenv("XMODAL_PRECISION", "fp8")
    code, _ = index(tmp_path, captioned_photos[0], tiny_clip_dir, "--device", "cpu")
    assert (code, capsys.readouterr().err) == (1, f"xmodal: error: {BAD_PRECISION}\n")
    code, col = index(tmp_path, captioned_photos[0], tiny_clip_dir, "--precision", "fp32")
    assert code == 0, capsys.readouterr().err  # the flag is used; the variable is not read
    spec = json.loads((col / "manifest.json").read_text())["encoder_spec"]
    assert spec["precision"] == "fp32"
