"""What may stand in an MQTT topic: ids that become topic levels, and whole topics.

Mosquitto drops a client that publishes a topic with a control character or a Unicode
noncharacter (a "malformed packet"), so every id that ends up in a topic is checked at
the door, and the publisher checks each topic again before sending it.
"""

from __future__ import annotations

from typing import Final

MAX_LEVEL_CHARS: Final = 128
MAX_TOPIC_BYTES: Final = 65_535  # MQTT's UTF-8 string length field


def _refused(code: int) -> bool:
    """Code points MQTT or Mosquitto refuse in a topic (MQTT 5 §1.5.4)."""
    return (
        code < 0x20
        or 0x7F <= code <= 0x9F
        or 0xD800 <= code <= 0xDFFF
        or 0xFDD0 <= code <= 0xFDEF
        or (code & 0xFFFE) == 0xFFFE
    )


def level_problem(value: str) -> str | None:
    """Say what keeps `value` from being one topic level, or None when it can be."""
    if not 0 < len(value) <= MAX_LEVEL_CHARS:
        return f"must be 1-{MAX_LEVEL_CHARS} characters"
    for n, char in enumerate(value):
        if char in "/+#":
            return f"must not contain {char!r} (character {n + 1})"
        if _refused(ord(char)):
            return (
                f"must not contain control or non-characters "
                f"(U+{ord(char):04X} at character {n + 1})"
            )
    return None


def topic_problem(topic: str) -> str | None:
    """Say why a broker would refuse to take `topic` for a publish, or None."""
    if not topic:
        return "the topic is empty"
    if len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        return f"the topic is over {MAX_TOPIC_BYTES} bytes"
    for char in topic:
        if char in "+#":
            return f"the topic contains the wildcard {char!r}"
        if _refused(ord(char)):
            return f"the topic contains U+{ord(char):04X}"
    return None
