"""Frequency-domain LSTMs of paper 000 over GRUV FFT frames.

A frame is the FFT of one block of N samples unrolled to 2N reals (real parts, then
imaginary parts): 8000 features for the paper's N = 4000 at 16 kHz. A model reads T
frames and predicts, at every step, the next frame; the loss is the mean squared error
against the true next frame.

Architectures (``Config.arch``; each is registered in ``cadenza.models.MODELS`` as
``fft_<arch>``), all ``input layer -> LSTM(s) -> dense -> next frame``:

``base``
    The GRUV baseline: frames -> LSTM -> dense.
``fc``
    A dense ReLU layer of ``fc_size`` units (default: as wide as the LSTM's hidden state,
    the paper's best choice) with dropout ``fc_dropout`` before the LSTM.
``conv1d``
    At every step, the frame as 2 channels (real, imaginary) x N frequencies, convolved by
    ``conv_filters`` (12) filters of ``conv_kernel`` (3) frequencies with ReLU and max-pooled
    by ``conv_pool`` (2) along frequency: 12 x N/2 = 6N features (24000 at paper size) feed the
    LSTM. The paper does not say whether its 1D convolution ran over the 2N-vector or over
    the real and imaginary parts as channels; channels keep a filter from straddling the
    real/imaginary seam, and both give 6N features after its "2x2" pooling.
``conv2d``
    At step t, the ``k_blocks`` (K = 3, about 0.75 s) frames ending at t stacked as a K x N
    image of 2 channels (real, imaginary) go through a small CNN (the paper gives no
    filters; cadenza uses ``cnn_channels`` (8, 16) convolutions of 3 blocks x 5 frequencies,
    each with ReLU and max pooling of ``cnn_pool`` (4) along frequency), then a dense ReLU
    layer of ``fc_size`` units, then the LSTM, which predicts frame t + 1. The dataset still
    yields T-frame windows: the K - 1 stacks at a window's start are padded with zero frames
    in training, while generation keeps K - 1 frames of real context
    (``n_seed_frames = T + K - 1``), so every stack it sees is full.
``bilinear``
    The FC layer read by two LSTMs whose outputs are summed, then the dense layer: the
    paper's best model.
``stacked``
    Two LSTMs in sequence (``n_layers`` = 2 by default), over the frames as the baseline.

Regularisation: the paper applies dropout 0.5 to the LSTM's input and recurrent weights
(Keras's ``dropout`` and ``recurrent_dropout``). Recurrent dropout needs a step-by-step LSTM
that gives up the fused matrix products, so cadenza drops the LSTM's inputs and outputs
instead (and between layers when ``n_layers > 1``). The paper's L2 of 1e-4 on the dense
layers is ``optim.weight_decay`` (it then applies to every weight, not just the dense ones).

Generation (``cadenza generate RUN --option mode=...``):

``mode=sliding`` (default, as the paper)
    A seed of T frames; predict the frame after the window, append it, drop the oldest,
    repeat: every prediction runs the LSTM over a whole T-frame window from a zero state.
    cadenza runs those windows as a pipeline: the T windows that will predict the next T
    frames all read the newest frame at once, so each frame costs one matrix product of T
    rows per weight instead of T vector products, with the same arithmetic per window.
``mode=stateful``
    The paper's rejected variant: read the seed once, then feed one frame at a time and keep
    the LSTM state.

On the CPU, the LSTMs run through :class:`FusedLSTMLayer`, which computes the input
projections and all weight gradients as single matrix products over the B x T rows;
PyTorch's own CPU LSTM reaches about half the matrix-multiply rate at paper size. The
step-by-step product ``h W_hh^T`` goes through oneDNN with ``W_hh`` packed once per call where
PyTorch has oneDNN (about 1.3x MKL for 16 rows), and dropout draws its mask from one
``torch.rand`` (half the time of ``bernoulli_``). CUDA uses cuDNN through ``nn.LSTM``; the
parameters are ``nn.LSTM``'s either way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cadenza.errors import ParameterError
from cadenza.models import DataInfo, GenerationRequest

ARCHS = ("base", "fc", "conv1d", "conv2d", "bilinear", "stacked")
MODES = ("sliding", "stateful")
#: conv2d's kernel: (blocks, frequencies).
CNN_KERNEL = (3, 5)


@dataclasses.dataclass
class Config:
    """Hyper-parameters; the defaults are paper 000's (hidden 2048, LSTM dropout 0.5)."""

    arch: str = dataclasses.field(default="base", metadata={"choices": ARCHS})
    hidden_size: int = dataclasses.field(default=2048, metadata={"min": 1})
    #: Layers of each LSTM (stacked: 2).
    n_layers: int = dataclasses.field(default=1, metadata={"min": 1})
    #: Dropout of the LSTM's inputs and outputs.
    dropout: float = dataclasses.field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    #: Width of the dense ReLU layer of fc, bilinear and conv2d; None: hidden_size.
    fc_size: int | None = dataclasses.field(default=None, metadata={"min": 1})
    fc_dropout: float = dataclasses.field(default=0.2, metadata={"min": 0.0, "max": 1.0})
    #: conv1d: filters, kernel and max pooling along frequency.
    conv_filters: int = dataclasses.field(default=12, metadata={"min": 1})
    conv_kernel: int = dataclasses.field(default=3, metadata={"min": 1})
    conv_pool: int = dataclasses.field(default=2, metadata={"min": 1})
    #: conv2d: frames per stack (K), CNN channels per layer and pooling along frequency.
    k_blocks: int = dataclasses.field(default=3, metadata={"min": 1})
    cnn_channels: tuple[int, ...] = (8, 16)
    cnn_pool: int = dataclasses.field(default=4, metadata={"min": 1})

    @classmethod
    def paper(cls, **changes: Any) -> Config:
        """Paper 000's size: hidden 2048 over 8000 features."""
        if changes.get("arch") == "stacked":
            changes.setdefault("n_layers", 2)
        return cls(**changes)

    @classmethod
    def tiny(cls, **changes: Any) -> Config:
        """A size that trains on two CPU cores in a minute or two."""
        return cls.paper(
            **{"hidden_size": 128, "dropout": 0.1, "fc_dropout": 0.1, "cnn_channels": (4, 8), **changes}
        )


# ----------------------------------------------------------------------------- the LSTM
class FusedLSTMLayer(torch.autograd.Function):
    """One LSTM layer over ``x`` (B, T, I) with PyTorch's gate order (i, f, g, o).

    The input projection ``x W_ih^T + b`` and, in the backward pass, ``dW_ih``, ``dW_hh``
    and ``dx`` are one matrix product each over all B x T rows; only ``h W_hh^T`` and its
    gradient are computed step by step.
    """

    @staticmethod
    def forward(ctx: Any, x, w_ih, w_hh, b, h0, c0):  # type: ignore[override]
        n_batch, n_steps, _ = x.shape
        hidden = w_hh.shape[1]
        gates = torch.addmm(b, x.reshape(n_batch * n_steps, -1), w_ih.t()).view(n_batch, n_steps, 4 * hidden)
        hs = x.new_empty(n_batch, n_steps + 1, hidden)  # hs[:, t + 1] = h_t, hs[:, 0] = h0
        cs = x.new_empty(n_batch, n_steps + 1, hidden)
        hs[:, 0], cs[:, 0] = h0, c0
        recurrent = _recurrent_product(w_hh, n_batch)
        for t in range(n_steps):
            g = gates[:, t]  # (B, 4H), becomes the activations (kept for the backward pass)
            g.add_(recurrent(hs[:, t]))
            g[:, : 2 * hidden].sigmoid_()
            g[:, 2 * hidden : 3 * hidden].tanh_()
            g[:, 3 * hidden :].sigmoid_()
            i, f, gg, o = g.chunk(4, 1)
            c = cs[:, t + 1]
            torch.mul(f, cs[:, t], out=c)
            c.addcmul_(i, gg)
            torch.mul(o, torch.tanh(c), out=hs[:, t + 1])
        ctx.save_for_backward(x, w_ih, w_hh, gates, hs, cs)
        return hs[:, 1:], hs[:, n_steps].clone(), cs[:, n_steps].clone()

    @staticmethod
    def backward(ctx: Any, dy, dh_n, dc_n):  # type: ignore[override]
        x, w_ih, w_hh, acts, hs, cs = ctx.saved_tensors
        n_batch, n_steps, _ = x.shape
        hidden = w_hh.shape[1]
        dgates = torch.empty_like(acts)  # (B, T, 4H)
        dh = dh_n.clone() if dh_n is not None else x.new_zeros(n_batch, hidden)
        dc = dc_n.clone() if dc_n is not None else x.new_zeros(n_batch, hidden)
        w_hh_t = w_hh.t().contiguous()  # (H, 4H)
        for t in range(n_steps - 1, -1, -1):
            if dy is not None:
                dh = dh + dy[:, t]
            i, f, gg, o = acts[:, t].chunk(4, 1)
            tanh_c = torch.tanh(cs[:, t + 1])
            di, df, dg, do = dgates[:, t].chunk(4, 1)
            torch.mul(dh, tanh_c, out=do).mul_(o * (1 - o))
            dc = dc + dh * o * (1 - tanh_c * tanh_c)
            torch.mul(dc, gg, out=di).mul_(i * (1 - i))
            torch.mul(dc, cs[:, t], out=df).mul_(f * (1 - f))
            torch.mul(dc, i, out=dg).mul_(1 - gg * gg)
            dc = dc * f
            dh = torch.mm(w_hh_t, dgates[:, t].t()).t()  # (B, H)
        d_all = dgates.view(n_batch * n_steps, 4 * hidden)
        dx = dw_ih = dw_hh = db = None
        if ctx.needs_input_grad[0]:
            dx = (d_all @ w_ih).view_as(x)
        if ctx.needs_input_grad[1]:
            dw_ih = d_all.t() @ x.reshape(n_batch * n_steps, -1)
        if ctx.needs_input_grad[2]:
            dw_hh = d_all.t() @ hs[:, :n_steps].reshape(n_batch * n_steps, hidden)
        if ctx.needs_input_grad[3]:
            db = d_all.sum(0)
        return dx, dw_ih, dw_hh, db, dh, dc


def _recurrent_product(w: torch.Tensor, n_rows: int):
    """``h -> h W^T`` for ``n_rows`` rows at a time, with ``w`` packed once for oneDNN where it can."""
    if w.dtype == torch.float32 and w.device.type == "cpu" and torch.backends.mkldnn.is_available():
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(w, n_rows)
        except (AttributeError, RuntimeError):
            pass
        else:
            return lambda h: torch.ops.mkldnn._linear_pointwise(h, packed, None, "none", [], "")
    return lambda h: torch.mm(w, h.t()).t()  # MKL is faster this way round for few rows


def _weights(lstm: nn.LSTM, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(W_ih, W_hh, b_ih + b_hh)`` of one layer."""
    b = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
    return getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}"), b


def run_lstm(lstm: nn.LSTM, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
    """``lstm(x, state)``: cuDNN on CUDA, :class:`FusedLSTMLayer` elsewhere. ``x`` (B, T, I)."""
    if x.device.type == "cuda":
        return lstm(x, state)
    n_batch = x.shape[0]
    zeros = x.new_zeros(lstm.num_layers, n_batch, lstm.hidden_size)
    h0, c0 = state if state is not None else (zeros, zeros)
    hs, cs = [], []
    for layer in range(lstm.num_layers):
        if layer and lstm.dropout and lstm.training:
            x = _CPUDropout.apply(x, lstm.dropout) if lstm.dropout < 1 else torch.zeros_like(x)
        x, h, c = FusedLSTMLayer.apply(x, *_weights(lstm, layer), h0[layer], c0[layer])
        hs.append(h)
        cs.append(c)
    return x, (torch.stack(hs), torch.stack(cs))


def lstm_step(lstm: nn.LSTM, xw: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One step of ``lstm`` for W windows that share their first layer's input.

    ``xw`` (n, 4H) is the first layer's input projection; ``h``, ``c`` (layers, W, n, H).
    Returns the new ``h``, ``c``.
    """
    n_layers, n_windows, n, hidden = h.shape
    h_new, c_new = torch.empty_like(h), torch.empty_like(c)
    inp = None
    for layer in range(n_layers):
        w_ih, w_hh, b = _weights(lstm, layer)
        g = torch.mm(w_hh, h[layer].reshape(n_windows * n, hidden).t()).t().reshape(n_windows, n, 4 * hidden)
        if layer == 0:
            g += xw
        else:
            g += torch.addmm(b, inp.reshape(n_windows * n, hidden), w_ih.t()).view_as(g)
        i, f, gg, o = g.chunk(4, -1)
        c_new[layer] = torch.sigmoid(f) * c[layer] + torch.sigmoid(i) * torch.tanh(gg)
        h_new[layer] = torch.sigmoid(o) * torch.tanh(c_new[layer])
        inp = h_new[layer]
    return h_new, c_new


class _CPUDropout(torch.autograd.Function):
    """Inverted dropout from one ``torch.rand`` draw: twice as fast as ``bernoulli_`` on the CPU."""

    @staticmethod
    def forward(ctx: Any, x, p):  # type: ignore[override]
        keep = torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))  # 0 or 1 / (1 - p)
        ctx.save_for_backward(keep)
        return x * keep

    @staticmethod
    def backward(ctx: Any, dy):  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return dy * keep, None


class Dropout(nn.Dropout):
    """``nn.Dropout``; in training on the CPU, drawn by :class:`_CPUDropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and 0.0 < self.p < 1.0 and x.device.type == "cpu" and not self.inplace:
            return _CPUDropout.apply(x, self.p)
        return super().forward(x)


# ----------------------------------------------------------------------------- input layers
class FrameConv1d(nn.Module):
    """(B, T, 2N) -> (B, T, filters * (N // pool)): a 1D CNN along frequency at every step."""

    def __init__(self, n_features: int, filters: int, kernel: int, pool: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, filters, kernel, padding=kernel // 2)
        self.pool = nn.MaxPool1d(pool)
        n_bins = n_features // 2
        self.n_out = filters * ((n_bins + 2 * (kernel // 2) - kernel + 1) // pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_batch, n_steps, n_features = x.shape
        z = x.reshape(n_batch * n_steps, 2, n_features // 2)  # (BT, re/im, N)
        z = self.pool(F.relu(self.conv(z)))  # (BT, filters, N / pool)
        return z.reshape(n_batch, n_steps, -1)


class StackCNN(nn.Module):
    """(B, T + K - 1, 2N) frames -> (B, T, fc_size): a CNN over K-frame stacks, then a dense layer."""

    def __init__(
        self, n_features: int, k_blocks: int, channels: tuple[int, ...], pool: int, n_out: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width, c_in = n_features // 2, 2
        for c_out in channels:
            pad = (CNN_KERNEL[0] // 2, CNN_KERNEL[1] // 2)
            layers += [
                nn.Conv2d(c_in, c_out, CNN_KERNEL, padding=pad),
                nn.ReLU(),
                nn.MaxPool2d((1, pool), ceil_mode=True),
            ]
            width, c_in = -(-width // pool), c_out
        self.cnn = nn.Sequential(*layers)
        self.k_blocks = k_blocks
        self.dense = nn.Linear(c_in * k_blocks * width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_batch = x.shape[0]
        k = self.k_blocks
        n_steps = x.shape[1] - k + 1
        stacks = x.unfold(1, k, 1)  # (B, T, 2N, K)
        stacks = stacks.reshape(n_batch * n_steps, 2, -1, k).transpose(2, 3)  # (BT, re/im, K, N)
        z = self.cnn(stacks).reshape(n_batch, n_steps, -1)
        return F.relu(self.dense(z))  # (B, T, fc_size)


# ----------------------------------------------------------------------------- the model
class Model(nn.Module):
    """Next-frame predictor over FFT frames.

    Parameters
    ----------
    config : Config
    info : DataInfo
        ``n_features`` (2N) and ``seq_len`` (T, the generation window) come from here.

    Examples
    --------
    >>> import torch
    >>> from cadenza.models import DataInfo
    >>> model = Model(Config.tiny(hidden_size=8), DataInfo(n_features=16, seq_len=4))
    >>> model(torch.zeros(2, 4, 16))[0].shape
    torch.Size([2, 4, 16])
    """

    def __init__(self, config: Config, info: DataInfo) -> None:
        super().__init__()
        if config.arch not in ARCHS:
            raise ParameterError(f"unknown fft_lstm architecture {config.arch!r}; expected one of {ARCHS}")
        n_features = info.n_features
        if config.arch in ("conv1d", "conv2d") and n_features % 2:
            raise ParameterError(f"fft_{config.arch} needs 2N features (real, imaginary), got {n_features}")
        if config.arch == "stacked" and config.n_layers < 2:
            raise ParameterError(f"fft_stacked needs n_layers >= 2, got {config.n_layers}")
        self.config = config
        self.n_features = n_features
        self.seq_len = int(info.seq_len or 40)
        #: Frames before a window that conv2d's first stack reads (K - 1), 0 for the others.
        self.n_context = config.k_blocks - 1 if config.arch == "conv2d" else 0
        self.n_seed_frames = self.seq_len + self.n_context
        fc_size = config.fc_size or config.hidden_size
        self.encoder: nn.Module
        if config.arch in ("fc", "bilinear"):
            self.encoder = nn.Sequential(
                nn.Linear(n_features, fc_size), nn.ReLU(), Dropout(config.fc_dropout)
            )
            n_inputs = fc_size
        elif config.arch == "conv1d":
            self.encoder = FrameConv1d(n_features, config.conv_filters, config.conv_kernel, config.conv_pool)
            n_inputs = self.encoder.n_out
        elif config.arch == "conv2d":
            self.encoder = nn.Sequential(
                StackCNN(n_features, config.k_blocks, config.cnn_channels, config.cnn_pool, fc_size),
                Dropout(config.fc_dropout),
            )
            n_inputs = fc_size
        else:
            self.encoder = nn.Identity()
            n_inputs = n_features
        self.drop = Dropout(config.dropout)

        def lstm() -> nn.LSTM:
            return nn.LSTM(
                n_inputs,
                config.hidden_size,
                num_layers=config.n_layers,
                batch_first=True,
                dropout=config.dropout if config.n_layers > 1 else 0.0,
            )

        self.lstm = lstm()
        self.lstm2 = lstm() if config.arch == "bilinear" else None
        self.head = nn.Linear(config.hidden_size, n_features)

    def encode(self, x: torch.Tensor, n_context: int = 0) -> torch.Tensor:
        """Frames (B, L, F) -> LSTM inputs (B, L - n_context, D); conv2d pads missing context with zeros."""
        if self.n_context:
            return self.encoder(F.pad(x, (0, 0, self.n_context - n_context, 0)))
        return self.encoder(x[:, n_context:])

    def forward(self, x: torch.Tensor, state: Any = None, *, n_context: int = 0) -> tuple[torch.Tensor, Any]:
        """``x`` (B, L, F) -> next-frame predictions (B, L - n_context, F) and the LSTMs' state.

        ``n_context`` leading frames only feed conv2d's first stacks (at most K - 1).
        """
        z = self.drop(self.encode(x, n_context))  # (B, T, D)
        if self.lstm2 is None:
            h, state = run_lstm(self.lstm, z, state)  # (B, T, H)
        else:
            s1, s2 = state if state is not None else (None, None)
            h1, s1 = run_lstm(self.lstm, z, s1)
            h2, s2 = run_lstm(self.lstm2, z, s2)
            h, state = h1 + h2, (s1, s2)
        return self.head(self.drop(h)), state  # (B, T, F)

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        y_hat, _ = self(batch["x"])
        return {"loss": F.mse_loss(y_hat.float(), batch["y"].float())}

    @torch.no_grad()
    def generate(self, request: GenerationRequest) -> torch.Tensor:
        """``request.seed`` (n, n_seed_frames, F) -> (n, n_frames, F), by ``mode`` (sliding or stateful)."""
        options = dict(request.options)
        mode = str(options.pop("mode", "sliding"))
        if options:
            raise ParameterError(
                f"fft_{self.config.arch} takes the generation option mode only, got {sorted(options)}"
            )
        if mode not in MODES:
            raise ParameterError(f"fft_{self.config.arch}: mode={mode!r} is not one of {', '.join(MODES)}")
        seed = request.seed
        if seed is None or seed.shape[1] != self.n_seed_frames:
            got = None if seed is None else tuple(seed.shape)
            raise ParameterError(
                f"fft_{self.config.arch} starts from (n, {self.n_seed_frames}, F) seed frames, got {got}"
            )
        return self._generate(seed, request.n_frames, sliding=mode == "sliding")

    def _generate(self, seed: torch.Tensor, n_frames: int, *, sliding: bool) -> torch.Tensor:
        """The generation loop of both modes, one frame per iteration.

        Windows are LSTM states of shape (layers, W, n, H), oldest first. Every frame from the
        first whole stack on is read by all open windows; a window that has read T frames
        predicts the next frame and closes (sliding). Stateful keeps a single window open.
        """
        n, n_seed, _ = seed.shape
        lstms = [m for m in (self.lstm, self.lstm2) if m is not None]
        k = self.n_context + 1
        frames = seed  # the last k frames are all that the next input needs
        states = [
            (
                seed.new_zeros(m.num_layers, 0, n, m.hidden_size),
                seed.new_zeros(m.num_layers, 0, n, m.hidden_size),
            )
            for m in lstms
        ]
        out = seed.new_empty(n, n_frames, seed.shape[2])
        j, n_out = self.n_context, 0  # j: index in ``frames`` of the frame being read
        is_seed_read = False
        while n_out < n_frames:
            z = self.encode(frames[:, j - self.n_context : j + 1], self.n_context)[:, 0]  # (n, D)
            for s, (m, (h, c)) in enumerate(zip(lstms, states)):
                if sliding or h.shape[1] == 0:  # open a window at this frame
                    zero = h.new_zeros(h.shape[0], 1, n, h.shape[3])
                    h, c = torch.cat([h, zero], 1), torch.cat([c, zero], 1)
                w_ih, _, b = _weights(m, 0)
                states[s] = lstm_step(m, torch.addmm(b, z, w_ih.t()), h, c)
            is_seed_read = is_seed_read or j == n_seed - 1
            if is_seed_read:  # the oldest window has read T frames (sliding) or the whole seed
                h_top = torch.stack([h[-1, 0] for h, _ in states]).sum(0)  # (n, H)
                y = self.head(h_top)  # (n, F)
                out[:, n_out] = y
                n_out += 1
                frames = torch.cat([frames[:, -(k - 1) :] if k > 1 else frames[:, :0], y[:, None]], 1)
                if sliding:
                    states = [(h[:, 1:], c[:, 1:]) for h, c in states]
                j = frames.shape[1] - 1
            else:
                j += 1
        return out
