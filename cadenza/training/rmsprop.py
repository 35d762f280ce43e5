"""Moved to :mod:`cadenza.kernels.rmsprop`; kept for ``benchmarks/fft_lstm.py``."""

from cadenza.kernels.rmsprop import RMSprop as RMSprop
