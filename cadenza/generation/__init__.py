"""Generation: new music from a run, a checkpoint or an exported bundle.

:func:`generate_from_run` loads a trained model, asks its family's ``generate`` for frames,
undoes the normalisation, and writes each result through the run's representation (WAV, or
MIDI with a rendering and a piano-roll PNG) with a JSON sidecar. :func:`synthesize` returns
the frames without writing anything; :func:`load_generator` the model ready to generate.

Examples
--------
>>> from cadenza.generation import generate_from_run
>>> paths = generate_from_run("runs/bach-base", seconds=10, n=3, seed=7, out="samples")  # doctest: +SKIP
"""

from cadenza.generation.generator import (
    Generator,
    bundle_clips,
    decode_to_audio,
    file_clips,
    find_checkpoint,
    generate_from_run,
    held_out_clips,
    load_generator,
    noise_clips,
    normalizer_from_state,
    seed_clips,
    silent_fraction,
    synthesize,
    write_output,
)

__all__ = [
    "Generator",
    "bundle_clips",
    "decode_to_audio",
    "file_clips",
    "find_checkpoint",
    "generate_from_run",
    "held_out_clips",
    "load_generator",
    "noise_clips",
    "normalizer_from_state",
    "seed_clips",
    "silent_fraction",
    "synthesize",
    "write_output",
]
