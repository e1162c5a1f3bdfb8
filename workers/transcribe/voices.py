"""Speaker embeddings (voice prints) of short audio windows, in numpy: Resemblyzer's GE2E
encoder (a 3-layer LSTM over 40-band mel frames, Apache-2.0), whose weights come from the
``resemblyzer`` package (the ``speakers`` extra). Only its weights file is read, without
importing it or torch: the file is a legacy torch pickle, unpickled here into numpy arrays,
and the forward pass is a few matrix products (about 10 ms per 1.6 s window on a core).

Blocking: :meth:`VoiceEncoder.embed` runs in a worker thread (see
:mod:`workers.transcribe.separation`).

Errors: :class:`VoicesUnavailable` (a :class:`~workers.errors.CallscribeError`, fatal) when the
weights are not installed or not readable.
"""

from __future__ import annotations

import collections
import ctypes
import importlib.util
import logging
import pickle
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from workers.errors import CallscribeError

log = logging.getLogger(__name__)

RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
HIDDEN = 256
#: GE2E was trained on 1.6 s partial utterances; windows may be shorter.
PARTIAL_FRAMES = 160
#: Resemblyzer raises quiet audio to this level before its spectrogram.
TARGET_DBFS = -30.0

Array = np.ndarray[Any, Any]


class VoicesUnavailable(CallscribeError):
    """The speaker encoder's weights are not installed (``pip install 'callscribe[speakers]'``)
    or cannot be read; fatal."""

    retriable = False


def weights_path() -> Path | None:
    """Where the installed ``resemblyzer`` package keeps ``pretrained.pt`` (None: not
    installed). Found without importing the package (that would import torch)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "pretrained.pt"
        if path.is_file():
            return path
    return None


def one_blas_thread() -> bool:
    """Numpy's matrix products use one core from now on (OpenBLAS's
    ``openblas_set_num_threads_local``, 0.3.27+; called from the voice thread, it was seen to
    hold in the process's other threads too): the encoder's small products otherwise spread
    over every core, which costs twice the CPU and takes whisper's cores while it decodes
    (whisper's own threads are CTranslate2's, not numpy's). False when numpy's BLAS is not
    such an OpenBLAS (nothing changes)."""
    folder = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(folder.glob("*openblas*")):
        try:
            library = ctypes.CDLL(str(path))
            setter = library.openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
        setter(1)
        return True
    return False


# ---- a legacy (pre-zip) torch checkpoint, read into numpy ----------------------------------

_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "LongStorage": np.int64,
           "IntStorage": np.int32, "HalfStorage": np.float16}


class _Tensor:
    """A tensor whose storage is read after the pickle that refers to it."""

    def __init__(self, storage: list[Any], offset: int, size: tuple[int, ...],
                 stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def array(self, storages: dict[str, Array]) -> Array:
        data = storages[self.storage[0]]
        item = data.itemsize
        return np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size,
            strides=tuple(s * item for s in self.stride)).copy()


def _rebuild(storage: list[Any], offset: int, size: tuple[int, ...],
             stride: tuple[int, ...], *_: Any) -> _Tensor:
    return _Tensor(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    """Torch's classes replaced by stand-ins; anything else in the file is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild
        if module == "torch" and name in _DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"{module}.{name} in a speaker-encoder checkpoint; "
                                     "expected tensors only")

    def persistent_load(self, pid: Any) -> list[Any]:
        # ("storage", storage type, key, location, size[, view]) -> [key, dtype name]
        return [str(pid[2]), pid[1]]


def load_legacy_checkpoint(file: BinaryIO) -> dict[str, Array]:
    """The tensors of a torch checkpoint in the legacy format (torch < 1.6's ``torch.save``)
    under ``model_state``, as numpy arrays by name."""
    for _ in range(3):  # magic number, protocol version, system info
        _Unpickler(file).load()
    unpickler = _Unpickler(file)
    checkpoint = unpickler.load()
    keys = _Unpickler(file).load()
    dtypes: dict[str, Any] = {}

    def collect(obj: Any) -> None:
        if isinstance(obj, _Tensor):
            dtypes[obj.storage[0]] = _DTYPES[obj.storage[1]]
        elif isinstance(obj, dict):
            for value in obj.values():
                collect(value)

    collect(checkpoint)
    storages: dict[str, Array] = {}
    for key in keys:
        (count,) = struct.unpack("<q", file.read(8))
        dtype = np.dtype(dtypes.get(key, np.float32))
        storages[key] = np.frombuffer(file.read(count * dtype.itemsize), dtype=dtype)
    state = checkpoint["model_state"]
    return {name: tensor.array(storages) for name, tensor in state.items()
            if isinstance(tensor, _Tensor)}


# ---- features -----------------------------------------------------------------------------

def _hz_to_mel(hz: Array) -> Array:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    mel = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    out: Array = np.where(hz >= 1000.0, log_part, mel)
    return out


def _mel_to_hz(mel: Array) -> Array:
    hz = mel * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    out: Array = np.where(mel >= 15.0, log_part, hz)
    return out


def mel_filters(rate: int = RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> Array:
    """Slaney-normalised triangular mel filters (as ``librosa.filters.mel``)."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(rate / 2)),
                                   n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    out: Array = weights.astype(np.float32)
    return out


_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
_FILTERS = mel_filters()


def mel_frames(audio: Array) -> Array:
    """Mel power spectrogram (frames x 40) of 16 kHz float audio, as Resemblyzer computes it
    (librosa, centred frames), after raising quiet audio to :data:`TARGET_DBFS`."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    if rms > 0:
        change = TARGET_DBFS - 20 * np.log10(rms)
        if change > 0:
            audio = audio * np.float32(10 ** (change / 20))
    padded = np.pad(audio, (N_FFT // 2, N_FFT // 2))
    count = 1 + (padded.size - N_FFT) // HOP
    if count <= 0:
        return np.zeros((0, N_MELS), dtype=np.float32)
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(count, N_FFT), strides=(padded.strides[0] * HOP, padded.strides[0]))
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=1)) ** 2
    out: Array = (power.astype(np.float32) @ _FILTERS.T).astype(np.float32)
    return out


# ---- the encoder --------------------------------------------------------------------------

def _sigmoid(x: Array) -> Array:
    out: Array = 0.5 * (np.tanh(0.5 * x) + 1.0)
    return out


class VoiceEncoder:
    """GE2E speaker embeddings (256 values, L2-normed) of 16 kHz audio windows."""

    def __init__(self, weights: dict[str, Array]) -> None:
        try:
            self._layers = [
                (weights[f"lstm.weight_ih_l{k}"].T.astype(np.float32),
                 weights[f"lstm.weight_hh_l{k}"].T.astype(np.float32),
                 (weights[f"lstm.bias_ih_l{k}"] + weights[f"lstm.bias_hh_l{k}"])
                 .astype(np.float32))
                for k in range(3)]
            self._linear_w = weights["linear.weight"].T.astype(np.float32)
            self._linear_b = weights["linear.bias"].astype(np.float32)
        except KeyError as exc:
            raise VoicesUnavailable(f"speaker encoder weights without {exc.args[0]!r}; "
                                    "expected Resemblyzer's GE2E checkpoint") from None

    @classmethod
    def load(cls, path: Path | None = None) -> VoiceEncoder:
        """The encoder with the installed ``resemblyzer`` package's weights (or ``path``)."""
        path = path or weights_path()
        if path is None:
            raise VoicesUnavailable("the speaker encoder's weights are not installed; "
                                    "expected the 'speakers' extra "
                                    "(pip install 'callscribe[speakers]')")
        try:
            with path.open("rb") as file:
                return cls(load_legacy_checkpoint(file))
        except (OSError, pickle.UnpicklingError, EOFError, struct.error, ValueError) as exc:
            raise VoicesUnavailable(f"{path}: not a readable GE2E checkpoint ({exc})") from exc

    def embed_frames(self, mels: Sequence[Array]) -> Array:
        """Embeddings (n x 256) of mel spectrograms, each (frames x 40); those of unequal
        length are run in groups of equal length."""
        out = np.zeros((len(mels), HIDDEN), dtype=np.float32)
        groups: dict[int, list[int]] = {}
        for i, mel in enumerate(mels):
            groups.setdefault(len(mel), []).append(i)
        for length, indices in groups.items():
            if length == 0:
                continue
            out[indices] = self._forward(np.stack([mels[i] for i in indices]))
        return out

    def _forward(self, x: Array) -> Array:
        """(batch x frames x 40) -> (batch x 256)."""
        batch, steps, _ = x.shape
        h = np.zeros((batch, HIDDEN), dtype=np.float32)
        for w_ih, w_hh, bias in self._layers:
            projected = x @ w_ih + bias  # batch x steps x 4H
            h = np.zeros((batch, HIDDEN), dtype=np.float32)
            c = np.zeros((batch, HIDDEN), dtype=np.float32)
            outputs = np.empty((batch, steps, HIDDEN), dtype=np.float32)
            for t in range(steps):
                gates = projected[:, t] + h @ w_hh
                i, f, g, o = np.split(gates, 4, axis=1)
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
                h = _sigmoid(o) * np.tanh(c)
                outputs[:, t] = h
            x = outputs
        raw = np.maximum(h @ self._linear_w + self._linear_b, 0.0)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        out: Array = raw / np.maximum(norms, 1e-9)
        return out

    def embed(self, audio: Array, windows: Sequence[tuple[int, int]]) -> Array:
        """Embeddings of ``windows`` (sample ranges) of 16 kHz float ``audio``."""
        mel = mel_frames(audio)
        mels = [mel[start // HOP:max(start // HOP + 1, end // HOP)] for start, end in windows]
        return self.embed_frames(mels)


Loader = Callable[[], VoiceEncoder]

__all__ = ["PARTIAL_FRAMES", "RATE", "Loader", "VoiceEncoder", "VoicesUnavailable",
           "load_legacy_checkpoint", "mel_filters", "mel_frames", "one_blas_thread",
           "weights_path"]
