"""Audio: WAV files, the asterisk dataset, the dilated conv net and lossless coding of speech."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

import ardm
from ardm.checkpoint import load_model, save_model
from ardm.cli import main
from ardm.coding import blob_sample_rate, split
from ardm.modalities import audio, get_modality, modality_for_path
from ardm.modalities.audio import (
    ASTERISK_DIR,
    AUDIO,
    audio_files,
    read_wav,
    samples_from_values,
    split_files,
    values_from_samples,
    wav_header,
    write_wav,
)
from ardm.modalities.image import IMAGE
from ardm.modalities.text import TEXT
from ardm.models import ARDM, UpscaleARDM
from ardm.nets import build_net
from ardm.nets.registry import net_config_from_dict

pytestmark = pytest.mark.skipif(
    not ASTERISK_DIR.is_dir(), reason="apt-get install asterisk-core-sounds-en-wav"
)


def real_samples(n: int, offset: int = 0) -> np.ndarray:
    """n int16 samples of real speech (test files of the asterisk split, joined)."""
    joined = np.concatenate([read_wav(p)[0] for p in split_files(audio_files(ASTERISK_DIR), "test")])
    return np.resize(joined[offset:], n).astype(np.int16)


def tiny_audio_model(length: int, branch_factor: int = 256, seed: int = 0) -> UpscaleARDM:
    """An untrained tiny upscale model over real-speech items, its step losses estimated."""
    torch.manual_seed(seed)
    net = build_net("tiny", 65536, (length,), net="dilated")
    model = UpscaleARDM(net, 65536, (length,), branch_factor=branch_factor, ce_weight=1e-4).eval()
    model.modality = "audio"
    items = torch.from_numpy(values_from_samples(real_samples(4 * length)).astype(np.int64))
    model.estimate_step_losses(items.view(4, length), generator=torch.Generator().manual_seed(0))
    return model


@pytest.fixture(scope="module")
def model() -> UpscaleARDM:
    return tiny_audio_model(256)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory of a tiny b = 16 model over 8,000-sample items (the CLI tests); its step
    losses are made up (decreasing), since these tests are about files, not about bits."""
    torch.manual_seed(0)
    net = build_net("tiny", 65536, (8000,), net="dilated")
    model = UpscaleARDM(net, 65536, (8000,), branch_factor=16, ce_weight=1e-4).eval()
    model.modality = "audio"
    model.step_losses.copy_(torch.linspace(4.0, 0.5, 8000, dtype=torch.float64).repeat(4, 1))
    out = tmp_path_factory.mktemp("speech-tiny")
    save_model(model, {"preset": "tiny", "dataset": "asterisk"}, out)
    return out


# ---- WAV files ----------------------------------------------------------------------------------


def test_values_map_silence_to_one_value_and_keep_order() -> None:
    samples = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    values = values_from_samples(samples)
    assert values.tolist() == [0, 32767, 32768, 32769, 65535]
    assert np.array_equal(samples_from_values(values), samples)


def test_real_files_read_and_write_byte_for_byte(tmp_path: Path) -> None:
    files = audio_files(ASTERISK_DIR)
    assert len(files) == 568
    for source in files[::71]:  # an evenly spaced handful, subfolders included
        samples, rate = read_wav(source)
        assert rate == 8000 and samples.dtype == np.int16
        with wave.open(str(source)) as w:  # the standard library agrees on the samples
            assert w.getnframes() == samples.size
        target = write_wav(tmp_path / "out.wav", samples, rate)
        assert target.read_bytes() == source.read_bytes()


def _wav(path: Path, channels: int = 1, width: int = 2, rate: int = 8000, frames: bytes = b"\0\0" * 10,
         extra: bytes = b"") -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    if extra:  # a LIST chunk after the data: what editors add
        raw = bytearray(path.read_bytes()) + extra
        raw[4:8] = struct.pack("<I", len(raw) - 8)
        path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 1, "frames": b"\x80" * 10}, "8-bit"),
        ({"channels": 2, "frames": b"\0\0" * 20}, "2 channel"),
        ({"width": 3, "frames": b"\0\0\0" * 10}, "24-bit"),
        ({"extra": b"LIST\x04\0\0\0INFO"}, "metadata"),
    ],
)
def test_unsupported_wavs_are_refused_with_what_is_supported(
    tmp_path: Path, kwargs: dict, message: str
) -> None:
    path = _wav(tmp_path / "x.wav", **kwargs)
    with pytest.raises(ValueError, match=message) as err:
        read_wav(path)
    assert "16-bit mono PCM" in str(err.value)


def test_not_a_wav_and_truncated_wav(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a WAV"):
        read_wav(tmp_path / "a.wav")
    good = _wav(tmp_path / "b.wav").read_bytes()
    (tmp_path / "c.wav").write_bytes(good[:-3])
    with pytest.raises(ValueError, match="sizes that do not match"):
        read_wav(tmp_path / "c.wav")


def test_wav_header_is_canonical() -> None:
    header = wav_header(16000, 5)
    assert header[:4] == b"RIFF" and header[36:40] == b"data"
    assert struct.unpack("<I", header[40:44])[0] == 10 and struct.unpack("<I", header[24:28])[0] == 16000


# ---- the dataset -------------------------------------------------------------------------------


def test_split_is_by_file_every_tenth_file_is_test() -> None:
    files = audio_files(ASTERISK_DIR)
    test, train = split_files(files, "test"), split_files(files, "train")
    assert len(test) == 56 and len(train) == 512 and not set(test) & set(train)
    assert test[0] == files[9]


def test_dataset_items_are_whole_chunks_of_the_split() -> None:
    test = AUDIO.load("asterisk", "test")
    assert test.shape[1] == AUDIO.item_length and test.dtype == torch.int32
    joined = np.concatenate([read_wav(p)[0] for p in split_files(audio_files(ASTERISK_DIR), "test")])
    assert test.shape[0] == joined.size // AUDIO.item_length
    assert np.array_equal(samples_from_values(test[0].numpy()), joined[: AUDIO.item_length])


def test_missing_dataset_names_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such directory"):
        AUDIO.load(tmp_path / "nope", "train")
    with pytest.raises(ValueError, match="no .wav files"):
        AUDIO.load(tmp_path, "train")


def test_wav_files_route_to_the_audio_modality() -> None:
    assert modality_for_path("speech.WAV").name == "audio"
    assert get_modality("audio").default_net == "dilated"


# ---- the net -----------------------------------------------------------------------------------


def test_dilated_net_sees_its_receptive_field_on_both_sides() -> None:
    torch.manual_seed(0)
    net = build_net("tiny", 65536, (256,), net="dilated").eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    reach = net.config.receptive_field // 2
    x = torch.randint(0, 65536, (1, 256))
    known = torch.ones(1, 256, dtype=torch.bool)
    t = torch.tensor([100])
    base = net(x, known, t)
    y = x.clone()
    y[0, 128] = (y[0, 128] + 30000) % 65536
    changed = (net(y, known, t) - base).abs().sum(-1)[0] > 0
    where = changed.nonzero().squeeze(1)
    assert int(where.min()) < 128 < int(where.max())  # non-causal: both sides see it
    assert int(where.min()) >= 128 - reach and int(where.max()) <= 128 + reach


def test_dilated_net_trains_on_real_speech() -> None:
    """Optimizer steps on real speech lower an upscale model's loss (b = 256, K = 65536), measured
    under the same draws of t and orders before and after."""
    torch.manual_seed(0)
    model = UpscaleARDM(build_net("tiny", 65536, (512,), net="dilated"), 65536, (512,), 256)
    x = torch.from_numpy(values_from_samples(real_samples(8 * 512)).astype(np.int64)).view(8, 512)
    fixed = model.training_noise(64, torch.Generator().manual_seed(1))
    probe = x.repeat(8, 1)

    def probe_loss() -> float:
        with torch.no_grad():
            return model.training_loss(probe, noise=fixed)[0].item()

    before = probe_loss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        loss, _ = model.training_loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = probe_loss()
    assert math.isfinite(after) and after < before - 0.3


# ---- coding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["joint", "independent"])
@pytest.mark.parametrize("length", [0, 1, 255, 256, 257, 1000])
def test_any_length_round_trips_bit_for_bit(model: UpscaleARDM, mode: str, length: int) -> None:
    values = values_from_samples(real_samples(length, offset=977))
    blob = ardm.compress(values, model, budget=4, mode=mode)
    back = ardm.decompress(blob, model)
    assert back.dtype == torch.uint16 and np.array_equal(back.numpy(), values)


def assert_chunks_and_threads_decode_alike(model: ARDM, values: np.ndarray, budget: int) -> None:
    """Every chunk of an independent blob decodes alone, and one torch thread makes the same blob."""
    blob = ardm.compress(values, model, budget=budget, mode="independent")
    parts = [ardm.decompress(b, model) for b in split(blob)]  # each chunk alone
    assert np.array_equal(torch.cat(parts).numpy(), values)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert ardm.compress(values, model, budget=budget, mode="independent") == blob
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("budget", [2, 7, 40, 512])
def test_budgets_and_groupings_decode_alike(model: UpscaleARDM, budget: int) -> None:
    assert_chunks_and_threads_decode_alike(
        model, values_from_samples(real_samples(700, offset=5000)), budget)


def test_speech_costs_less_than_raw_and_near_its_exact_nll(model: UpscaleARDM) -> None:
    values = values_from_samples(real_samples(256, offset=12000))
    x = torch.from_numpy(values.astype(np.int64)).view(1, 256)
    order = ardm.random_order(256, model.order_seed)  # the codec's order and policy
    nll = float(model.exact_nll_bits(x, order, model.policy(8)).sum())
    blob = ardm.compress(values, model, budget=8)
    assert 8 * len(blob) < 16 * 256
    # Container and byte end (~40 bits) plus the quantization of 512 digit tables of 256
    # symbols to 24-bit frequencies (measured: ~0.05 bits a digit for this untrained model).
    assert 8 * len(blob) <= nll + 40 + 0.1 * 2 * 256


def test_sample_rate_is_kept_only_where_it_differs(model: UpscaleARDM) -> None:
    values = values_from_samples(real_samples(300))
    default = ardm.compress(values, model, budget=4)
    other = ardm.compress(values, model, budget=4, sample_rate=44100)
    assert blob_sample_rate(default, model) == 8000 and blob_sample_rate(other, model) == 44100
    assert len(other) > len(default)
    assert np.array_equal(ardm.decompress(other, model).numpy(), values)
    with pytest.raises(ValueError, match="sample_rate"):
        ardm.compress(values, model, sample_rate=0)
    with pytest.raises(ValueError, match="for audio"):
        ardm.compress(ardm.bundled_images()[0], sample_rate=8000)


def test_only_audio_files_have_a_sample_rate(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "a.wav", real_samples(10), 16000)
    assert AUDIO.read_file_with_rate(wav, (8000,))[1] == 16000
    (tmp_path / "a.txt").write_bytes(b"abc")
    assert TEXT.read_file_with_rate(tmp_path / "a.txt", (256,))[1] is None
    for modality, data in ((TEXT, np.zeros(3, np.uint8)), (IMAGE, np.zeros((1, 2, 2), np.uint8))):
        with pytest.raises(ValueError, match=f"{modality.name} data has no sample rate, got 8000"):
            modality.write_file(tmp_path / "out", data, 8000)
        assert modality.write_file(tmp_path / f"out-{modality.name}", data).exists()


def test_direct_parametrization_has_b_logits_saves_and_codes(tmp_path: Path) -> None:
    """The direct parametrization over 65,536 values: b logits a sample (not K), rebuilt from
    its config, and any length round-trips."""
    from ardm.training.config import TrainConfig
    from ardm.training.loop import build_for_training

    cfg = TrainConfig(out=str(tmp_path / "run"), modality="audio", data="asterisk", model="upscale",
                      net="dilated", preset="tiny", branch_factor=16, parametrization="direct")
    model = build_for_training(cfg, 65536, (64,)).eval()
    assert model.net.head.params_per_var == 16
    x = torch.from_numpy(values_from_samples(real_samples(4 * 64)).astype(np.int64)).view(4, 64)
    model.estimate_step_losses(x)
    save_model(model, {"preset": "tiny", "dataset": "asterisk"}, tmp_path / "saved")
    loaded = load_model(tmp_path / "saved")
    assert loaded.parametrization == "direct" and loaded.net.head.params_per_var == 16
    values = x.flatten()[:150].to(torch.uint16)
    blob = ardm.compress(values, model, budget=6)
    assert torch.equal(ardm.decompress(blob, loaded), values)
    for bad in ({"head_classes": 16}, {"head": "categorical", "head_classes": 10**9}):
        with pytest.raises(ValueError, match="head_classes"):
            net_config_from_dict("dilated", bad)


def test_truncated_and_foreign_blobs_are_errors(model: UpscaleARDM) -> None:
    blob = ardm.compress(values_from_samples(real_samples(300)), model, budget=4)
    with pytest.raises(ValueError):
        ardm.decompress(blob[:-2], model)
    with pytest.raises(ValueError, match="another model|model of your own"):
        ardm.decompress(blob)


# ---- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [1 / 8000, 0.1, 60.0])
def test_cli_round_trips_wav_files_byte_for_byte(
    model_dir: Path, tmp_path: Path, seconds: float
) -> None:
    n = round(seconds * 8000)
    source = write_wav(tmp_path / "speech.wav", real_samples(n, offset=333), 8000)
    original = source.read_bytes()
    assert main(["compress", str(source), "--model", str(model_dir), "--budget", "8", "--no-progress"]) == 0
    blob = tmp_path / "speech.wav.ardm"
    source.unlink()
    assert main(["decompress", str(blob), "--model", str(model_dir), "--no-progress"]) == 0
    assert source.read_bytes() == original


def test_cli_keeps_another_sample_rate(model_dir: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_wav(tmp_path / "wide.wav", real_samples(1600), 16000)
    original = source.read_bytes()
    reads: list[Path] = []
    real_read = audio.read_wav
    monkeypatch.setattr(audio, "read_wav", lambda path: reads.append(path) or real_read(path))
    assert main(["compress", str(source), "--model", str(model_dir), "--budget", "4", "--no-progress"]) == 0
    assert len(reads) == 1  # the samples and the sample rate come from one read of the file
    source.unlink()
    assert main(["decompress", str(tmp_path / "wide.wav.ardm"), "--model", str(model_dir),
                 "--no-progress"]) == 0
    assert source.read_bytes() == original


def test_cli_writes_audio_as_wav_only(model_dir: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A WAV's samples are never written as WAV bytes under another type's name (.png, .npy)."""
    source = write_wav(tmp_path / "speech.wav", real_samples(200), 8000)
    assert main(["compress", str(source), "--model", str(model_dir), "--budget", "4", "--no-progress"]) == 0
    blob = str(tmp_path / "speech.wav.ardm")
    before = sorted(p.name for p in tmp_path.iterdir())
    for name in ("back.png", "back.npy"):
        argv = ["decompress", blob, "-o", str(tmp_path / name), "--model", str(model_dir)]
        assert main([*argv, "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert f"{name}: audio is written as a WAV file" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert main(["decompress", blob, "-o", str(tmp_path / "back"), "--model", str(model_dir),
                 "--no-progress"]) == 0
    assert (tmp_path / "back.wav").read_bytes() == source.read_bytes()


def test_cli_refuses_stereo_and_8_bit_wavs(model_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    for name, kwargs in [("stereo.wav", {"channels": 2}), ("byte.wav", {"width": 1})]:
        path = _wav(tmp_path / name, **kwargs)
        assert main(["compress", str(path), "--model", str(model_dir), "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert "16-bit mono PCM" in err and "Traceback" not in err
        assert not (tmp_path / f"{name}.ardm").exists()


def test_cli_refuses_audio_for_a_text_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_wav(tmp_path / "speech.wav", real_samples(100), 8000)
    assert main(["compress", str(path), "--model", "kjv", "--no-progress"]) == 1
    assert "audio" in capsys.readouterr().err


def test_saved_audio_model_loads_with_its_modality(model_dir: Path) -> None:
    loaded = load_model(model_dir)
    assert loaded.modality == "audio" and loaded.num_classes == 65536 and loaded.num_stages == 4
