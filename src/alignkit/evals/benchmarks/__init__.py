"""Benchmark tasks over the shared data: TruthfulQA, capability (ARC, PIQA, HellaSwag, MMLU, BoolQ, OpenBookQA,
WinoGrande, GSM8K), diversity, BBQ, WinoBias, HarmBench, AdvBench, XSTest and the MACHIAVELLI adapter."""
