"""Checks of the environment, shared by ``cadenza doctor`` and the warnings of the library."""

from __future__ import annotations

import dataclasses
import importlib
import os
import platform
import shutil
import subprocess


@dataclasses.dataclass
class Check:
    name: str
    ok: bool
    detail: str
    cost: str = ""  # what is lost while this is missing
    optional: bool = False


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception:
        return None


def check_cpus() -> list[Check]:
    """The CPUs this process may use, how busy the machine is, and the threads cadenza chooses.

    The load is measured from :func:`cadenza.threads.mark` when one was taken 0.2-10 s ago (as
    :func:`check_environment` does while it imports), else over a short window. A command that
    already chose (``cadenza demo``) has its choice reported as it is.
    """
    from cadenza import threads

    choice = threads.current() or threads.choose_threads()
    measured = choice if choice.busy is not None or not choice.explicit else threads.choose_threads(env=False)
    cpus = choice.cpus
    load = threads.load_average()
    load_text = f"load average {load[0]:.2f} (5 min {load[1]:.2f})" if load else "no load average here"
    if measured.busy is None:
        busy_text = "what other programs use is not measurable here"
    else:
        busy_text = f"other programs keep {measured.busy:.1f} of {cpus.available} CPUs busy"
    busy = measured.busy is not None and measured.busy > threads.BUSY_TOLERANCE
    if choice.explicit:
        how = f"set by {choice.source}; the free CPUs would give {measured.threads}"
    elif choice.threads < min(choice.cap, cpus.available):
        how = "the CPUs other programs leave free"
    else:
        how = "every CPU available is free"
    return [
        Check("cpus", True, cpus.describe()),
        Check(
            "load",
            not busy,
            f"{busy_text}; {load_text}",
            "training and generation use only the CPUs that are free (two threads waiting for a busy "
            "core are slower than one): close other programs for full speed",
            optional=True,
        ),
        Check(
            "threads",
            True,
            f"{choice.threads} ({how}; torch would use {choice.cap}; re-checked every "
            f"{threads.RECHECK_SECONDS:g} s in training unless set; --threads N or {threads.ENV_VAR}=N sets it)",
            optional=True,
        ),
        _denormals(),
    ]


def _denormals() -> Check:
    """How subnormal floats are treated; a ``CADENZA_DENORMALS`` other than ``keep`` (a typo) is
    flagged, since it leaves them flushed as if it were not set."""
    from cadenza import threads

    value = os.environ.get(threads.DENORMALS_ENV, "").strip()
    if threads.keep_denormals():
        detail = (
            f"kept as they are ({threads.DENORMALS_ENV}=keep): training on x86 can slow "
            "threefold as subnormal floats appear"
        )
        return Check("denormals", True, detail, optional=True)
    detail = f"treated as zero in training and generation ({threads.DENORMALS_ENV}=keep keeps them)"
    if value:
        return Check(
            "denormals",
            False,
            f"{detail}; {threads.DENORMALS_ENV}={value!r} means nothing",
            f"set {threads.DENORMALS_ENV}=keep to keep them, or unset it",
            optional=True,
        )
    return Check("denormals", True, detail, optional=True)


def check_kernels() -> list[Check]:
    """The paths chosen per machine (``CADENZA_KERNELS``; with ``auto``, the default, the choices
    measured here and kept by :mod:`cadenza.kernels.measured`): the ``fft_*`` models' LSTM
    layers and WaveNet generation's products."""
    from cadenza import kernels
    from cadenza.errors import ParameterError
    from cadenza.kernels import linear, lstm_choice, measured, wavenet_step

    try:
        mode = kernels.mode()
    except ParameterError as e:
        return [Check("kernels", False, str(e), "set CADENZA_KERNELS to auto (default), on or off")]
    if mode != "auto":
        what = (
            "every kernel on, the fused LSTM layer and BLAS products always"
            if mode == "on"
            else "every kernel off"
        )
        return [Check("kernels", True, f"{what} ({kernels.ENV_VAR}={mode})", optional=True)]
    where = measured.cache_file()
    kept = f"kept in {where}" if where else "kept in the process only (CADENZA_CACHE=off)"
    checks = []
    for name, table, paths, how, when in (
        (
            "lstm path",
            lstm_choice.TABLE,
            {"fused": "the fused layer", "torch": "PyTorch's"},
            "each fft_* LSTM layer the faster of cadenza's fused layer and PyTorch's",
            "an fft_* model's first training step measures its layers",
        ),
        (
            "matrix products",
            linear.TABLE,
            {"mkl": "MKL", "onednn": "oneDNN"},
            "large float32 products (fft_* models' layers) through the faster of MKL and oneDNN",
            "the first training step of an fft_* model measures its products",
        ),
        (
            "wavenet products",
            wavenet_step.TABLE,
            {"sgemm": "BLAS sgemm", "loops": "the compiled loops"},
            "WaveNet generation's products through the faster of BLAS and the compiled loops",
            "the first generation of each stream count measures",
        ),
    ):
        known = measured.choices(table)
        if known:
            counts = ", ".join(
                f"{label} for {sum(p == key for p in known.values())}" for key, label in paths.items()
            )
            text = f"{len(known)} shape{'s' * (len(known) != 1)} measured on this CPU ({counts}), {kept}"
        else:
            text = f"none measured yet on this CPU ({when}), {kept}"
        checks.append(Check(name, True, f"{how}, measured once per shape; {text}", optional=True))
    return checks


def check_environment(cpus: bool = True) -> list[Check]:
    """Everything ``cadenza doctor`` prints, as data (``cpus``: with :func:`check_cpus`)."""
    if cpus:
        from cadenza import threads

        threads.mark()  # the load is measured over the imports below, without a wait of its own
    checks = [Check("python", True, platform.python_version())]
    for module, why in (
        ("torch", "needed for every model"),
        ("numpy", "needed everywhere"),
        ("soundfile", "reads and writes audio"),
        ("soxr", "resamples audio"),
        ("librosa", "mel filters and reference transforms"),
        ("music21", "the embedded corpus and MusicXML"),
        ("pretty_midi", "MIDI input and output"),
        ("matplotlib", "plots"),
    ):
        v = _version(module)
        checks.append(
            Check(module, v is not None, v or "missing", "" if v else f"pip install {module}: {why}")
        )

    import soundfile

    mp3 = "MP3" in soundfile.available_formats()
    checks.append(
        Check(
            "mp3 decoding",
            mp3,
            f"libsndfile {soundfile.__libsndfile_version__}",
            ""
            if mp3
            else "MP3 files will be skipped; upgrade soundfile (>= 0.12.1 bundles libsndfile with MP3)",
            optional=True,
        )
    )

    from cadenza.audio.io import _import_audioread

    ffmpeg = shutil.which("ffmpeg") or shutil.which("avconv")
    readable = bool(ffmpeg) and _import_audioread() is not None
    checks.append(
        Check(
            "aac/m4a/wma",
            readable,
            f"through audioread and {ffmpeg}" if readable else "not readable here",
            ""
            if readable
            else ".m4a, .aac and .wma files (an iTunes library) are skipped as 'unsupported format'; "
            "install ffmpeg (Debian/Ubuntu: apt-get install ffmpeg) to read them",
            optional=True,
        )
    )

    from cadenza.audio import find_soundfont, fluidsynth_available

    fs = shutil.which("fluidsynth")
    fs_version = ""
    if fs:
        try:
            out = subprocess.run([fs, "--version"], capture_output=True, text=True, timeout=10).stdout
            fs_version = out.splitlines()[0] if out else ""
        except (OSError, subprocess.SubprocessError):
            fs_version = ""
    checks.append(
        Check(
            "fluidsynth",
            bool(fs) and fluidsynth_available(),
            fs_version or fs or "missing",
            "scores are rendered with cadenza's small built-in synthesiser instead of real instruments; "
            "install with: apt-get install fluidsynth fluid-soundfont-gm",
            optional=True,
        )
    )
    sf = find_soundfont()
    checks.append(
        Check(
            "soundfont",
            sf is not None,
            str(sf) if sf else "no General MIDI .sf2 found",
            "set CADENZA_SOUNDFONT=/path/to/font.sf2 or apt-get install fluid-soundfont-gm",
            optional=True,
        )
    )

    from cadenza import _malloc

    lib = _malloc.find_tcmalloc()
    if not _malloc.wanted():
        detail = "system (CADENZA_MALLOC=system)"
    else:
        detail = f"tcmalloc for train, generate and demo ({lib})" if lib else "system"
    checks.append(
        Check(
            "allocator",
            lib is not None and _malloc.wanted(),
            detail,
            "CPU training re-faults its large buffers at every step without tcmalloc "
            "(about a third slower at paper size): apt-get install libtcmalloc-minimal4",
            optional=True,
        )
    )

    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        checks.append(Check("gpu", True, f"CUDA {torch.version.cuda}: {names}", optional=True))
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        checks.append(Check("gpu", True, "Apple MPS", optional=True))
    else:
        checks.append(
            Check(
                "gpu",
                False,
                f"none (torch {torch.__version__}, {torch.get_num_threads()} CPU threads)",
                "tiny configs train on CPU in minutes; paper-size models want a GPU "
                "(install a CUDA build: make TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128')",
                optional=True,
            )
        )
    checks += check_kernels()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    checks.append(
        Check(
            "chromium",
            bool(chromium),
            chromium or "missing",
            "only the listening test's browser tests need it (apt-get install chromium)",
            optional=True,
        )
    )
    if cpus:
        checks += check_cpus()
    return checks
