"""Mixtures of diagonal Gaussians as a network's output (Bishop 1994; Graves 2013).

A regressor trained by least squares predicts the mean of what may come next; fed its own
predictions it settles on a blurred average (a steady tone, a wash). A mixture head predicts a
distribution instead, is trained by its negative log-likelihood and is *sampled* at generation,
so each generated value is one of the futures the model finds likely. The mel RNN (paper 001)
and the Seq2Seq (paper 002) use it; the layout of the parameters is theirs, the maths is here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_LOG_2PI = math.log(2.0 * math.pi)


def mixture_nll(
    logits: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Negative log-likelihood of ``y`` (B, S, D) under diagonal Gaussian mixtures, per value (nats).

    ``logits`` (B, S, M), ``mean`` and ``log_std`` (B, S, M, D).

    >>> import torch
    >>> y = torch.zeros(1, 1, 2)
    >>> nll = mixture_nll(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2), y)
    >>> round(nll.item(), 4)  # one standard normal: 0.5 log(2 pi)
    0.9189
    """
    z = (y[..., None, :] - mean) / log_std.exp()  # (B, S, M, D)
    log_density = -0.5 * z.square() - log_std - 0.5 * _LOG_2PI  # (B, S, M, D)
    log_joint = F.log_softmax(logits, dim=-1) + log_density.sum(-1)  # (B, S, M)
    return -torch.logsumexp(log_joint, dim=-1).mean() / y.shape[-1]


def mixture_mean(logits: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """The mixture's expectation (..., D): what a regressor would predict."""
    return (F.softmax(logits, dim=-1)[..., None] * mean).sum(-2)


def sample_mixture(
    logits: torch.Tensor,
    mean: torch.Tensor,
    log_std: torch.Tensor,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One draw (n, D) from each of n mixtures: ``logits`` (n, M), ``mean`` and ``log_std`` (n, M, D).

    The component is drawn with its weight, then the value from its Gaussian with the standard
    deviation scaled by ``temperature`` (0: the mixture's mean, no draw).

    >>> import torch
    >>> logits = torch.tensor([[0.0, -1e9]])  # all the weight on the first component
    >>> mean = torch.tensor([[[1.0], [5.0]]])
    >>> sample_mixture(logits, mean, torch.full((1, 2, 1), -30.0)).round()
    tensor([[1.]])
    """
    if temperature == 0:
        return mixture_mean(logits, mean)
    # The component by the inverse CDF of its weights: one uniform per row (cheaper per call than
    # torch.multinomial, which matters in a loop that runs once per audio sample).
    cdf = F.softmax(logits.float(), dim=-1).cumsum(-1)  # (n, M)
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=cdf.dtype)
    pick = (cdf < u * cdf[:, -1:]).sum(-1).clamp_max(cdf.shape[1] - 1)  # (n,)
    rows = torch.arange(len(pick), device=pick.device)
    mu, std = mean[rows, pick], log_std[rows, pick].exp()  # (n, D)
    noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + temperature * std * noise
