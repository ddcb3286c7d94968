"""Write static/audio/sla-warning.wav: the console's reply-clock warning, two short tones (16 kHz mono).

Generated rather than downloaded: no licence question, 13 KB, and easy to change.
    python scripts/sla_sound.py
"""

import math
import struct
import wave
from pathlib import Path

RATE = 16000
TONES = ((880, 0.16), (0, 0.05), (1175, 0.2))  # (Hz, seconds); 0 is a pause


def main() -> None:
    frames = bytearray()
    for freq, seconds in TONES:
        n = int(RATE * seconds)
        for i in range(n):
            envelope = min(1.0, i / 200, (n - i) / 400)  # no clicks at the edges
            value = int(0.35 * 32767 * envelope * math.sin(2 * math.pi * freq * i / RATE)) if freq else 0
            frames += struct.pack("<h", value)
    path = Path(__file__).resolve().parent.parent / "static" / "audio" / "sla-warning.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(bytes(frames))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
