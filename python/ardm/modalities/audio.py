"""Audio: 16-bit mono PCM WAV, samples mapped to 0..65535 (K = 65536), items of 8,000 samples.

A sample ``s`` (int16) becomes the value ``s + 32768``, so digital silence is one value and the
order of values is the order of amplitudes (what a discretized logistic mixture needs).

The dataset ``asterisk`` is the English prompts of the Debian package
``asterisk-core-sounds-en-wav`` (568 files, 8 kHz, 12.2 M samples, one speaker) under
``/usr/share/asterisk/sounds/en_US_f_Allison/``. Any directory of 16-bit mono PCM WAV files works
too. **Split by file**: the files are sorted by their path relative to the directory and every
tenth one (indices 9, 19, 29, ...) is test, the rest train. Within a split the files are joined
in that order and cut into whole 8,000-sample chunks (a training item may span two files; the
tail of the split is left out). A user's file (``read_file``) is read as one sequence of any
length, which the codec cuts into items and whose last, shorter item it codes exactly.

Files are read and written as canonical PCM WAV: a 44-byte header (RIFF, ``fmt`` of 16 bytes,
``data``) and nothing else, which is what ``write_file`` gives back byte for byte. A WAV with
other chunks, another sample width, more channels or compression is refused with a message that
says what is supported, never converted.

Example:
    >>> import numpy as np
    >>> AUDIO.num_classes, AUDIO.item_length, AUDIO.default_dataset
    (65536, 8000, 'asterisk')
    >>> values_from_samples(np.array([-32768, 0, 32767], dtype=np.int16)).tolist()
    [0, 32768, 65535]
    >>> wav_header(8000, 3)[:4], len(wav_header(8000, 3))
    (b'RIFF', 44)
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "AUDIO",
    "AudioModality",
    "ASTERISK_DIR",
    "DEFAULT_SAMPLE_RATE",
    "audio_files",
    "read_wav",
    "samples_from_values",
    "split_files",
    "values_from_samples",
    "wav_header",
    "write_wav",
]

ASTERISK_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
DEFAULT_SAMPLE_RATE = 8000
OFFSET = 32768
TEST_EVERY = 10  # file i (sorted) is test iff i % 10 == 9
MAX_WAV_SAMPLES = 1 << 31  # a data chunk's size is a uint32 of bytes
_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")


def values_from_samples(samples: np.ndarray) -> np.ndarray:
    """int16 samples -> values 0..65535 (uint16): ``s + 32768``."""
    return (samples.astype(np.int32) + OFFSET).astype(np.uint16)


def samples_from_values(values: np.ndarray) -> np.ndarray:
    """The inverse of :func:`values_from_samples`: values 0..65535 -> int16 samples."""
    return (np.asarray(values).astype(np.int32) - OFFSET).astype(np.int16)


def wav_header(sample_rate: int, num_samples: int) -> bytes:
    """The canonical 44-byte header of a 16-bit mono PCM WAV of ``num_samples`` samples."""
    data_bytes = 2 * num_samples
    return _HEADER.pack(
        b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, 1, sample_rate, 2 * sample_rate, 2, 16,
        b"data", data_bytes,
    )


def _describe_format(raw: bytes) -> str:
    """What a WAV's fmt chunk says, for an error message (best effort)."""
    pos = 12
    while pos + 8 <= len(raw):
        tag, size = raw[pos : pos + 4], struct.unpack("<I", raw[pos + 4 : pos + 8])[0]
        if tag == b"fmt " and size >= 16 and pos + 24 <= len(raw):
            fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", raw[pos + 8 : pos + 24])
            kind = {1: "PCM", 3: "float", 0xFFFE: "extensible"}.get(fmt, f"format {fmt}")
            return f"{kind}, {channels} channel(s), {bits}-bit, {rate} Hz"
        pos += 8 + size + (size & 1)
    return "no readable fmt chunk"


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """A canonical 16-bit mono PCM WAV as (int16 samples, sample rate); anything else is a
    ``ValueError`` that says what is supported.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "a.wav"
        >>> _ = write_wav(p, np.array([1, -2, 3], dtype=np.int16), 8000)
        >>> samples, rate = read_wav(p)
        >>> samples.tolist(), rate
        ([1, -2, 3], 8000)
    """
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a WAV file (no RIFF/WAVE header)")
    supported = "ardm codes 16-bit mono PCM WAV files with a plain 44-byte header"
    if len(raw) < 44:
        raise ValueError(f"{path}: truncated WAV ({len(raw)} bytes)")
    fields = _HEADER.unpack(raw[:44])
    (_, riff_size, _, fmt_tag, fmt_size, fmt, channels, rate, byte_rate, align, bits,
     data_tag, data_size) = fields
    if fmt_tag != b"fmt " or fmt_size != 16 or fmt != 1 or channels != 1 or bits != 16:
        raise ValueError(
            f"{path}: {_describe_format(raw)}; {supported}. Convert it first, e.g. "
            f"`sox in.wav -b 16 -c 1 -e signed-integer out.wav` (a lossy step if it changes "
            f"the width or channels)"
        )
    if data_tag != b"data" or riff_size != len(raw) - 8 or data_size != len(raw) - 44:
        raise ValueError(
            f"{path}: the WAV holds chunks besides fmt and data (metadata) or declares sizes that "
            f"do not match the file; {supported}, which come back byte for byte. Strip the "
            "metadata first, e.g. `sox in.wav out.wav` (the samples stay exact)"
        )
    if data_size % 2 or byte_rate != 2 * rate or align != 2 or rate < 1:
        raise ValueError(f"{path}: inconsistent WAV header (rate {rate}, {data_size} data bytes)")
    samples = np.frombuffer(raw, dtype="<i2", offset=44).astype(np.int16)
    if raw[:44] != wav_header(rate, samples.size):  # every field checked: the header is canonical
        raise ValueError(f"{path}: non-canonical WAV header; {supported}")
    return samples, int(rate)


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int) -> Path:
    """Write int16 ``samples`` as a canonical 16-bit mono PCM WAV; returns the path."""
    samples = np.asarray(samples)
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise ValueError(f"WAV samples must be 1-D int16, got {samples.dtype} {samples.shape}")
    if not 1 <= int(sample_rate) < 1 << 31 or samples.size >= MAX_WAV_SAMPLES:
        raise ValueError(f"a WAV needs 1 <= rate < 2^31 and < 2^31 samples, got {sample_rate} Hz")
    target = Path(path)
    target.write_bytes(wav_header(int(sample_rate), samples.size) + samples.astype("<i2").tobytes())
    return target


def audio_files(directory: str | os.PathLike) -> list[Path]:
    """The ``*.wav`` files under ``directory`` (any depth), sorted by relative path."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        if str(directory) == "asterisk":
            raise ValueError(
                f"the asterisk dataset is missing ({ASTERISK_DIR}): "
                "apt-get install asterisk-core-sounds-en-wav"
            )
        raise ValueError(f"audio dataset {root}: no such directory (give a directory of WAV files)")
    files = sorted((p for p in root.rglob("*") if p.suffix.lower() == ".wav" and p.is_file()),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise ValueError(f"audio dataset {root}: the directory holds no .wav files")
    return files


def split_files(files: list[Path], split: str) -> list[Path]:
    """The ``train`` or ``test`` files of a sorted list: every tenth file (9, 19, ...) is test.

    Example:
        >>> [p.name for p in split_files([Path(f"{i}.wav") for i in range(12)], "test")]
        ['9.wav']
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    test = split == "test"
    return [p for i, p in enumerate(files) if (i % TEST_EVERY == TEST_EVERY - 1) == test]


def _dataset_dir(name_or_path: str | os.PathLike) -> str | Path:
    return ASTERISK_DIR if str(name_or_path) == "asterisk" and ASTERISK_DIR.is_dir() else name_or_path


class AudioModality:
    """The audio modality (see the module docstring)."""

    name = "audio"
    num_classes = 65536
    dtype = "uint16"
    default_dataset = "asterisk"
    datasets = ("asterisk",)
    dataset_help = ("'asterisk' (Debian package asterisk-core-sounds-en-wav) or a directory of "
                    "16-bit mono PCM WAV files")
    default_net = "dilated"
    default_ce_weight = 1e-4  # the paper's for audio
    default_model = "upscale"
    default_branch_factor = 16  # learned fastest at equal compute (benchmarks/bench_audio_kinds.py)
    preview_suffix = ".wav"
    # Items of 8,000 samples are large: one row per evaluation costs nothing in speed and lets a
    # single short file decode without evaluating padding rows.
    coding_rows = 1
    sample_rate = DEFAULT_SAMPLE_RATE
    file_suffixes = (".wav",)
    #: Samples per item of the models trained here (``ardm train`` cuts datasets so).
    item_length = 8000

    def load(self, name_or_path: str | Path, split: str) -> torch.Tensor:
        files = split_files(audio_files(_dataset_dir(name_or_path)), split)
        joined = np.concatenate([read_wav(p)[0] for p in files]) if files else np.zeros(0, np.int16)
        n = joined.size // self.item_length
        if not n:
            raise ValueError(
                f"audio dataset {name_or_path}: its {split} split has {joined.size} samples, less "
                f"than one {self.item_length}-sample item"
            )
        values = values_from_samples(joined[: n * self.item_length]).astype(np.int32)
        return torch.from_numpy(values).view(n, self.item_length)

    def holds_dataset(self, path: Path) -> bool:
        """A WAV file (``load`` then says to give its directory) or a directory with WAVs."""
        if path.is_file():
            return path.suffix.lower() in self.file_suffixes
        return path.is_dir() and any(p.suffix.lower() in self.file_suffixes for p in path.rglob("*"))

    def read_file(self, path: str | os.PathLike, data_shape: tuple[int, ...]) -> np.ndarray:
        return self.read_file_with_rate(path, data_shape)[0]

    def read_file_with_rate(
        self, path: str | os.PathLike, data_shape: tuple[int, ...]
    ) -> tuple[np.ndarray, int | None]:
        if len(data_shape) != 1:
            raise ValueError(
                f"{path}: a WAV file needs a model of 1-D items (samples), this one takes items of "
                f"shape {data_shape}; use an audio model (--model speech)"
            )
        samples, rate = read_wav(path)
        return values_from_samples(samples), rate

    def write_file(
        self, path: str | os.PathLike, data: np.ndarray, sample_rate: int | None = None
    ) -> Path:
        if data.dtype != np.uint16 or data.ndim != 1:
            raise ValueError(f"audio data must be 1-D uint16 values, got {data.dtype} {data.shape}")
        target = Path(path)
        if not target.suffix:
            target = target.with_name(target.name + ".wav")
        elif target.suffix.lower() != ".wav":  # never WAV bytes under another type's name
            raise ValueError(f"{target}: audio is written as a WAV file; give a name ending in "
                             ".wav")
        return write_wav(target, samples_from_values(data), sample_rate or DEFAULT_SAMPLE_RATE)

    def save_preview(
        self, samples: torch.Tensor, num_classes: int, path: str | os.PathLike, scale: int = 2
    ) -> Path:
        """One WAV per sample (``path`` with ``-0``, ``-1``, ... before ``.wav``); returns the
        first, and a PNG of the waveforms beside them."""
        del scale
        if num_classes != self.num_classes:
            raise ValueError(f"audio previews need K = {self.num_classes}, got {num_classes}")
        target = Path(path).with_suffix(".wav")
        target.parent.mkdir(parents=True, exist_ok=True)
        values = samples.reshape(samples.shape[0], -1).clamp(0, num_classes - 1).numpy()
        written = [
            write_wav(target.with_name(f"{target.stem}-{i}.wav"), samples_from_values(v),
                      DEFAULT_SAMPLE_RATE)
            for i, v in enumerate(values)
        ]
        _plot_waveforms(values, target.with_suffix(".png"))
        return written[0]


def _plot_waveforms(values: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(values), 1, figsize=(8, 1.2 * len(values) + 0.4), squeeze=False)
    for ax, v in zip(axes[:, 0], values):
        ax.plot(np.arange(v.size) / DEFAULT_SAMPLE_RATE, samples_from_values(v), lw=0.4)
        ax.set_ylim(-32768, 32767)
        ax.set_yticks([])
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


AUDIO = AudioModality()
