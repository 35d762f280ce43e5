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
``dropout=on`` (default), ``off`` or a rate in [0, 1)
    Whether the training dropout (or dropout at the rate given) stays on while generating, as
    Tacotron 2 keeps its pre-net dropout on at inference. A regressor fed its own output is a
    deterministic map of its window, which settles into a cycle; the dropout masks draw each
    frame instead. Measured on the 24 demo chorales (fft_base-tiny trained 2 minutes with
    dropout 0.1, its best checkpoint, 8 clips of 10 s, median loop score; real music scores up
    to 0.55, the evaluation flags a loop above 0.8): 0.83 off, 0.73 at 0.1, 0.60 at 0.35, 0.50
    at 0.5. ``off`` is the paper's model.

The model is plain PyTorch (``nn.LSTM``, ``nn.Linear``, ``nn.Conv1d``/``nn.Conv2d``). On the CPU
its LSTMs, their dropout and the generation step go through :mod:`cadenza.kernels.lstm`:
each layer in training runs cadenza's fused layer or PyTorch's own, whichever was measured
faster for its shape on this machine (:mod:`cadenza.kernels.lstm_choice`; CUDA keeps cuDNN);
its ``Linear`` layers are ``nn.Linear`` whose large products take MKL or oneDNN, whichever
is faster here (:mod:`cadenza.kernels.linear`). ``CADENZA_KERNELS=off`` runs ``nn.LSTM``,
``nn.Linear`` and ``nn.Dropout`` themselves. The parameters are ``nn.LSTM``'s either way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cadenza.errors import ParameterError
from cadenza.kernels.linear import Linear
from cadenza.kernels.lstm import Dropout, dropout_always, linear_for_rows, lstm_forward, lstm_stepper
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
        """A size that trains on two CPU cores in a minute or two, with the paper's dropout: at
        0.1 the tiny fft_base overfitted the 24 demo chorales within 120 steps (validation
        loss 0.82, then rising) and looped when it ran free (loop score 0.83); at 0.5 it
        reached 0.80 at step 306 and scored 0.52 (real music: up to 0.55). conv1d keeps 4
        filters pooled by 4 (8000 LSTM inputs, as fft_base): the paper's 12 pooled by 2 feed
        24000 and trained 5x slower per step than fft_base (143 steps in a 10-minute study).
        conv2d keeps 2 and 4 channels pooled by 8: with 4 and 8 pooled by 4 its CNN over
        K-frame stacks made it the slowest of the six (924 steps in the study's 8 minutes, where
        fft_base made 3521) and 18 of its 50 clips looped; with these 1263 steps (on a machine
        not quite idle) and 2 of 50 looped, KAD 1.22 against 1.25 (docs/study.md, section 7).
        Its CNN in channels-last memory (``StackCNN.channels_last``) then made its step 1.35x
        faster on the CPU: 3166 steps in the 8 minutes and no clip flagged (section 13; 2480
        steps and no flag before, on the same machine)."""
        return cls.paper(
            **{
                "hidden_size": 128,
                "cnn_channels": (2, 4),
                "cnn_pool": 8,
                "conv_filters": 4,
                "conv_pool": 4,
                **changes,
            }
        )


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
        if not info.seq_len:
            raise ParameterError(
                "the fft LSTMs are built from windows of seq_len frames (the sequence dataset)"
            )
        self.seq_len = int(info.seq_len)
        #: Frames before a window that conv2d's first stack reads (K - 1), 0 for the others.
        self.n_context = config.k_blocks - 1 if config.arch == "conv2d" else 0
        self.n_seed_frames = self.seq_len + self.n_context
        fc_size = config.fc_size or config.hidden_size
        self.encoder: nn.Module
        if config.arch in ("fc", "bilinear"):
            self.encoder = nn.Sequential(Linear(n_features, fc_size), nn.ReLU(), Dropout(config.fc_dropout))
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
        self.drop = Dropout(config.dropout)  # nn.Dropout; on the CPU its mask is one torch.rand draw

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
        self.head = Linear(config.hidden_size, n_features)

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
        # lstm_forward(lstm, z, state) is lstm(z, state), fused on the CPU (cadenza.kernels.lstm)
        if self.lstm2 is None:
            h, state = lstm_forward(self.lstm, z, state)  # (B, T, H)
        else:  # bilinear: two LSTMs read the same inputs, their outputs are summed
            s1, s2 = state if state is not None else (None, None)
            h1, s1 = lstm_forward(self.lstm, z, s1)  # (B, T, H)
            h2, s2 = lstm_forward(self.lstm2, z, s2)  # (B, T, H)
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
        dropout = self._generation_dropout(options.pop("dropout", True))
        if options:
            raise ParameterError(
                f"fft_{self.config.arch} takes the generation options mode and dropout, got {sorted(options)}"
            )
        if mode not in MODES:
            raise ParameterError(f"fft_{self.config.arch}: mode={mode!r} is not one of {', '.join(MODES)}")
        seed = request.seed
        if seed is None or seed.shape[1] != self.n_seed_frames:
            got = None if seed is None else tuple(seed.shape)
            raise ParameterError(
                f"fft_{self.config.arch} starts from (n, {self.n_seed_frames}, F) seed frames, got {got}"
            )
        return self._generate(seed, request.n_frames, sliding=mode == "sliding", dropout=dropout)

    def _generation_dropout(self, value: Any) -> float:
        """``--option dropout=``: on (the training rate), off, or a rate in [0, 1)."""
        # YAML reads on/off as booleans (and 1.0 == True as a dict key: test identity)
        text = "on" if value is True else "off" if value is False else str(value).lower()
        if text in ("on", "off"):
            return self.config.dropout if text == "on" else 0.0
        try:
            rate = float(text)
        except ValueError:
            rate = -1.0
        if not 0.0 <= rate < 1.0:
            raise ParameterError(
                f"fft_{self.config.arch}: dropout={value!r} is not on, off or a rate in [0, 1)"
            )
        return rate

    def _generate(
        self, seed: torch.Tensor, n_frames: int, *, sliding: bool, dropout: float = 0.0
    ) -> torch.Tensor:
        """The generation loop of both modes, one frame per iteration.

        Windows are LSTM states, oldest first: per LSTM, ``h`` and ``c`` as one (W, n, H) tensor
        per layer. Every frame from the first whole stack on is read by all open windows; a
        window that has read T frames predicts the next frame and closes (sliding). Stateful
        keeps a single window open. A frame is one step of every window
        (:func:`~cadenza.kernels.lstm.lstm_stepper`): one matrix product of W x n rows per
        weight, the same arithmetic as ``forward`` over every window from a zero state. The
        products of the n streams' rows with a large weight (the first LSTM layer's input,
        fc and bilinear's dense input layer, the head) have their weight packed once
        (:func:`~cadenza.kernels.lstm.linear_for_rows`), so that ``--n 8`` reads each weight
        once per frame as ``--n 1`` does.
        """
        n, n_seed, _ = seed.shape
        lstms = [m for m in (self.lstm, self.lstm2) if m is not None]
        steps = [lstm_stepper(m) for m in lstms]
        frame_encoder, dense_head = (
            self._frame_encoder(n, dropout > 0),
            linear_for_rows(self.head.weight, self.head.bias, n),
        )
        p = dropout

        def encode(frames: torch.Tensor) -> torch.Tensor:
            return dropout_always(frame_encoder(frames), p)

        def head(h: torch.Tensor) -> torch.Tensor:
            return dense_head(dropout_always(h, p))

        k = self.n_context + 1
        frames = seed  # the last k frames are all that the next input needs
        no_window = seed.new_zeros(0, n, self.config.hidden_size)  # (W = 0, n, H)
        new_window = seed.new_zeros(1, n, self.config.hidden_size)  # a zero state, (1, n, H)
        states = [([no_window] * m.num_layers, [no_window] * m.num_layers) for m in lstms]
        out = seed.new_empty(n, n_frames, seed.shape[2])
        j, n_out = self.n_context, 0  # j: index in ``frames`` of the frame being read
        is_seed_read = False
        while n_out < n_frames:
            z = encode(frames[:, j - self.n_context : j + 1])  # (n, D)
            for s, (h, c) in enumerate(states):
                if sliding or h[0].shape[0] == 0:  # open a window at this frame
                    h = [torch.cat([x, new_window]) for x in h]
                    c = [torch.cat([x, new_window]) for x in c]
                states[s] = steps[s](z, h, c)
            is_seed_read = is_seed_read or j == n_seed - 1
            if is_seed_read:  # the oldest window has read T frames (sliding) or the whole seed
                h_top = torch.stack([h[-1][0] for h, _ in states]).sum(0)  # (n, H): its top layer
                y = head(h_top)  # (n, F): self.head
                out[:, n_out] = y
                n_out += 1
                frames = torch.cat([frames[:, -(k - 1) :] if k > 1 else frames[:, :0], y[:, None]], 1)
                if sliding:  # close the oldest window
                    states = [([x[1:] for x in h], [x[1:] for x in c]) for h, c in states]
                j = frames.shape[1] - 1
            else:
                j += 1
        return out

    def _frame_encoder(self, n: int, keep_dropout: bool = False) -> Any:
        """``encode`` of the newest stack for generation: frames (n, n_context + 1, F) -> (n, D).

        fc and bilinear's dense input layer (``Linear -> ReLU -> Dropout``) takes
        :func:`~cadenza.kernels.lstm.linear_for_rows`, its weight packed once for the n streams,
        its dropout applied when ``keep_dropout``; the other input layers run as modules.
        """
        if self.config.arch in ("fc", "bilinear") and not self.training:
            dense = self.encoder[0]
            product = linear_for_rows(dense.weight, dense.bias, n)
            p = self.config.fc_dropout if keep_dropout else 0.0
            return lambda frames: dropout_always(torch.relu(product(frames[:, -1])), p)
        return lambda frames: self.encode(frames, self.n_context)[:, 0]


# ----------------------------------------------------------------------------- input layers
class FrameConv1d(nn.Module):
    """(B, T, 2N) -> (B, T, filters * (N // pool)): a 1D CNN along frequency at every step."""

    def __init__(self, n_features: int, filters: int, kernel: int, pool: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, filters, kernel, padding=kernel // 2)
        self.pool = nn.MaxPool1d(pool)
        n_bins = n_features // 2
        self.n_out = filters * ((n_bins + 2 * (kernel // 2) - kernel + 1) // pool)
        if self.n_out < 1:
            raise ParameterError(
                f"fft_conv1d: frames of {n_bins} frequencies are fewer than conv_pool={pool}; "
                "use a smaller conv_pool or a larger n_fft"
            )

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
            layers += [  # pooling before the ReLU is the same function (both are monotone), on 1/pool of the values
                nn.Conv2d(c_in, c_out, CNN_KERNEL, padding=pad),
                nn.MaxPool2d((1, pool), ceil_mode=True),
                nn.ReLU(),
            ]
            width, c_in = -(-width // pool), c_out
        self.cnn = nn.Sequential(*layers)
        self.k_blocks = k_blocks
        #: The CNN runs channels-last (NHWC): oneDNN on the CPU and cuDNN on CUDA serve its few
        #: channels with faster kernels than NCHW, and the stacks are built in that layout from
        #: the frames in one copy (training step on two CPU cores: 1.35x tiny, 1.13x paper size
        #: under tcmalloc, 2.9x tiny under glibc's malloc, benchmarks/fft_conv2d_cpu.py;
        #: 1.11-1.24x at paper size on an H200, benchmarks/gpu_conv2d.py). Same arithmetic
        #: either way; False gives NCHW.
        self.channels_last = True
        self.dense = Linear(c_in * k_blocks * width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_batch = x.shape[0]
        k = self.k_blocks
        n_steps = x.shape[1] - k + 1
        if self.channels_last:  # (B, T+K-1, N, re/im) once, then each stack's (K, N, re/im) block: NHWC
            frames = x.reshape(n_batch, x.shape[1], 2, -1).transpose(2, 3).contiguous()
            stacks = frames.unfold(1, k, 1).permute(0, 1, 4, 2, 3).reshape(n_batch * n_steps, k, -1, 2)
            stacks = stacks.permute(0, 3, 1, 2)  # (BT, re/im, K, N) in channels-last strides, no copy
        else:
            stacks = x.unfold(1, k, 1)  # (B, T, 2N, K)
            stacks = stacks.reshape(n_batch * n_steps, 2, -1, k).transpose(2, 3)  # (BT, re/im, K, N)
        z = self.cnn(stacks).reshape(n_batch, n_steps, -1)
        return F.relu(self.dense(z))  # (B, T, fc_size)
