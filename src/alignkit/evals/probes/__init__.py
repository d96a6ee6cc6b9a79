"""Behavioral probes: sycophancy, hallucination, calibration, paraphrase consistency, identity invariance,
refusal quality, prompt injection, and the eval-vs-deployment behavior gap. Each is an eval `Task`."""
