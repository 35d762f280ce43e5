"""Invertible encodings of music, one file each with ``encode`` and ``decode`` side by side.

==============  ==================  =====================================================
name            class               frames
==============  ==================  =====================================================
``waveform``    :class:`Waveform`   samples ``(n, 1)``: float32, or mu-law classes (uint8)
``fft``         :class:`FFTFrames`  GRUV blocks ``(n_blocks, 2 * block_size)``: Re then Im
``mel``         :class:`Mel`        log-mel dB ``(n_frames, n_mels)``; Griffin-Lim inverse
``mfcc``        :class:`MFCC`       ``(n_frames, n_mfcc)``; inverse DCT, then as ``mel``
``pianoroll``   :class:`PianoRoll`  many-hot ``(n_steps, n_pitches)`` uint8, whole bars
==============  ==================  =====================================================

Build one by name with :func:`make_representation`, and back from its saved parameters
(``rep.to_dict()``, as stored in a feature store or checkpoint) with
:func:`representation_from_dict`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cadenza.errors import ParameterError
from cadenza.representations._spectral import spectral_distance
from cadenza.representations.base import Representation
from cadenza.representations.fft_frames import FFTFrames
from cadenza.representations.mel import Mel
from cadenza.representations.mfcc import MFCC
from cadenza.representations.pianoroll import PianoRoll
from cadenza.representations.waveform import Waveform, mu_law_decode, mu_law_encode

__all__ = [
    "MFCC",
    "REPRESENTATIONS",
    "FFTFrames",
    "Mel",
    "PianoRoll",
    "Representation",
    "Waveform",
    "make_representation",
    "mu_law_decode",
    "mu_law_encode",
    "representation_from_dict",
    "spectral_distance",
]

#: Every representation by name; tests iterate over this table.
REPRESENTATIONS: dict[str, type[Representation]] = {
    cls.name: cls for cls in (Waveform, FFTFrames, Mel, MFCC, PianoRoll)
}


def make_representation(name: str, **params: Any) -> Representation:
    """The representation ``name`` with ``params`` overriding its defaults.

    Parameters
    ----------
    name : str
        A key of :data:`REPRESENTATIONS`.
    **params
        Field values, checked against the fields' types and ranges.

    Returns
    -------
    Representation

    Raises
    ------
    ParameterError
        For an unknown name (listing the known ones), an unknown parameter (listing the valid
        ones) or a bad value.

    Examples
    --------
    >>> make_representation("mfcc", n_mfcc=13).n_features
    13
    >>> make_representation("fft").frame_rate  # 16 kHz in blocks of 4000 samples
    4.0
    """
    if name not in REPRESENTATIONS:
        raise ParameterError(f"unknown representation {name!r}; known: {', '.join(REPRESENTATIONS)}")
    cls = REPRESENTATIONS[name]
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ParameterError(
            f"unknown parameter(s) {', '.join(unknown)} for representation {name!r}; valid: {', '.join(fields)}"
        )
    return cls(**params)


def representation_from_dict(d: dict[str, Any]) -> Representation:
    """Inverse of ``Representation.to_dict``: ``{"name": ..., **params}`` -> the representation.

    Examples
    --------
    >>> rep = make_representation("pianoroll", lowest_pitch=24, n_pitches=84)
    >>> representation_from_dict(rep.to_dict()) == rep
    True
    """
    if not isinstance(d, dict) or "name" not in d:
        raise ParameterError(f"a representation dict needs a 'name' key, got {d!r}")
    params = dict(d)
    return make_representation(params.pop("name"), **params)
