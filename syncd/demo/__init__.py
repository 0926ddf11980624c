"""`syncd demo`: syncd with everything it needs, on this machine, playing real stories.

Owns starting a private Mosquitto, the QBO sandbox and syncd as processes on free
loopback ports, connected with no manual step (`services`), a person working in QBO
(`qbo_person`: payments and voids through the sandbox's API) and the scripted CRM that
plays the stories and prints each step as it happens (`stories`).

May import: everything (it drives syncd from outside, through MQTT and HTTP only).
"""

from __future__ import annotations
