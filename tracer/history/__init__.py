"""history: the agent's flight recorder, so that a capture can start in the past.

docs/captures.md says what it keeps and why. Modules, one job each:

- events: EventRing, the sampled drop events' raw records within a byte budget.
- counts: CounterHistory, the kernel counters' change every interval, kept for a while within a byte budget.
- recorder: FlightRecorder, both together as serve feeds them and a capture reads them (window()).
"""
