"""Audio in and out: decoding any audio file, writing WAV/FLAC, and rendering scores to sound."""

from cadenza.audio.io import (
    AUDIO_EXTENSIONS,
    DECODABLE_EXTENSIONS,
    LoudAudioWarning,
    MendedAudioWarning,
    PartialAudioWarning,
    UnfinishedAudioWarning,
    audio_info,
    is_silent,
    read_audio,
    trim_silence,
    write_audio,
)
from cadenza.audio.render import (
    RenderFallbackWarning,
    find_soundfont,
    fluidsynth_available,
    pianoroll_to_midi,
    render_midi,
    render_pianoroll,
)
from cadenza.audio.synth import synthesize

__all__ = [
    "AUDIO_EXTENSIONS",
    "DECODABLE_EXTENSIONS",
    "LoudAudioWarning",
    "MendedAudioWarning",
    "PartialAudioWarning",
    "RenderFallbackWarning",
    "UnfinishedAudioWarning",
    "audio_info",
    "find_soundfont",
    "fluidsynth_available",
    "is_silent",
    "pianoroll_to_midi",
    "read_audio",
    "render_midi",
    "render_pianoroll",
    "synthesize",
    "trim_silence",
    "write_audio",
]
