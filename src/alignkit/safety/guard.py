"""`Guard`: input and output rails in one pipeline, for the server and for any application.

    guard = Guard()                                   # the shipped policy
    d = guard.check_input("How do I make a pipe bomb?")
    d.action, d.category, d.text                      # "block", "indiscriminate_weapons", the refusal
    guard.check_output(reply, prompt=user_message)    # the same on the model's reply

Order per message: PII first (a redacted message is what the later rails and the model see), then the
injection detector (which also decodes base64 / rot13 / leetspeak / homoglyphs / hidden characters),
then the harm classifier on the text and its decoded views in one batch, then the LLM judge. The first
block wins and later rails are skipped (the judge is the slowest, so it only sees what passed the rest).
The batch methods (`check_inputs`, `check_outputs`) run each rail once over the whole batch.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from alignkit.safety.decision import Decision, Rail, RailVerdict, Stage
from alignkit.safety.policy import GuardPolicy, load_policy

if TYPE_CHECKING:
    from alignkit.feedback.constitution import Constitution
    from alignkit.generate.base import Generator

__all__ = ["Guard"]

log = logging.getLogger("alignkit.guard")


class Guard:
    """Runs the rails a `GuardPolicy` enables (or the `rails` given) and returns typed `Decision`s."""

    def __init__(self, policy: GuardPolicy | str | Path | None = None, *, rails: Sequence[Rail] | None = None,
                 judge: "Generator | None" = None, classifier: Any = None,
                 constitution: "Constitution | None" = None) -> None:
        from alignkit.feedback.constitution import default_constitution, load_constitution

        self.policy = policy if isinstance(policy, GuardPolicy) else load_policy(policy)
        self.constitution = constitution or (load_constitution(self.policy.constitution)
                                             if self.policy.constitution else default_constitution())
        self.rails: list[Rail] = list(rails) if rails is not None else self._rails(judge, classifier)

    def _rails(self, judge: "Generator | None", classifier: Any) -> list[Rail]:
        from alignkit.safety.classifier import ClassifierRail, HarmClassifier
        from alignkit.safety.injection import InjectionRail
        from alignkit.safety.pii import PiiRail

        p, rails = self.policy, []
        if p.pii.enabled:
            rails.append(PiiRail(p.pii.kinds, p.pii.action, p.pii.stages))
        if p.injection.enabled:
            rails.append(InjectionRail(p.injection.threshold, p.injection.stages))
        if p.classifier.enabled:
            clf = classifier or HarmClassifier.load(p.classifier.head, embedder_dtype=p.classifier.embedder_dtype,
                                                    threads=p.classifier.threads or None)
            rails.append(ClassifierRail(clf, p.classifier.threshold, p.classifier.category_thresholds,
                                        p.classifier.categories, p.classifier.stages))
        if p.llm_judge.enabled:
            from alignkit.safety.judge import LlmJudgeRail

            j = p.llm_judge
            rails.append(LlmJudgeRail(judge or _load_judge(j), self.constitution, stages=j.stages,
                                      threshold=j.threshold, use_logprobs=j.use_logprobs,
                                      max_tokens=j.max_tokens, on_error=j.on_error))
        return rails

    def warmup(self) -> "Guard":
        """Load models now (classifier head, embedder) so the first request is not slow."""
        self.check_inputs(["Hello!"])
        return self

    # ---- public API --------------------------------------------------------------------------------

    def check_input(self, message: str | Sequence[dict[str, str]]) -> Decision:
        """Check a user message (or the last user turn of a chat)."""
        return self.check_inputs([_last_user(message)])[0]

    def check_output(self, response: str, prompt: str | Sequence[dict[str, str]] | None = None) -> Decision:
        """Check a model response; `prompt` (the user message it answers) gives the judge context."""
        return self.check_outputs([response], [None if prompt is None else _last_user(prompt)])[0]

    def check_inputs(self, messages: Sequence[str]) -> list[Decision]:
        return self._run(list(messages), "input", None)

    def check_outputs(self, responses: Sequence[str], prompts: Sequence[str | None] | None = None) -> list[Decision]:
        return self._run(list(responses), "output", list(prompts) if prompts is not None else None)

    # ---- the pipeline ------------------------------------------------------------------------------

    def _run(self, texts: list[str], stage: Stage, prompts: list[str | None] | None) -> list[Decision]:
        from alignkit.safety.injection import deobfuscate

        started = time.perf_counter()
        current = list(texts)  # rewritten in place by rewrite verdicts
        verdicts: list[list[RailVerdict]] = [[] for _ in texts]
        done: dict[int, RailVerdict] = {}  # index -> blocking verdict
        views: list[Any] | None = None
        for rail in self.rails:
            if stage not in rail.stages:
                continue
            todo = [i for i in range(len(texts)) if i not in done]
            if not todo:
                break
            kwargs: dict[str, Any] = {}
            if rail.name in ("injection", "classifier"):  # share one deobfuscation between them
                if views is None or len(views) != len(texts):
                    views = [deobfuscate(t) for t in current]
                if rail.name == "injection":
                    kwargs["views"] = [views[i] for i in todo]
                elif self.policy.classifier.check_decoded:
                    kwargs["views"] = [[v.text for v in views[i][1:]] for i in todo]
            sub_prompts = [prompts[i] for i in todo] if prompts is not None else None
            results = rail.check([current[i] for i in todo], stage, sub_prompts, **kwargs)
            for i, verdict in zip(todo, results):
                verdicts[i].append(verdict)
                if verdict.action == "block":
                    done[i] = verdict
                elif verdict.action == "rewrite" and verdict.text is not None:
                    current[i] = verdict.text
                    views = None  # views follow the rewritten text
        ms = (time.perf_counter() - started) * 1000 / max(len(texts), 1)
        return [self._decide(texts[i], current[i], stage, verdicts[i], done.get(i), ms) for i in range(len(texts))]

    def _decide(self, original: str, current: str, stage: Stage, verdicts: list[RailVerdict],
                blocked: RailVerdict | None, ms: float) -> Decision:
        from alignkit.safety.refusal import refusal_message

        if blocked is not None:
            r = self.policy.refusal
            message, reason, alternative = refusal_message(blocked.category, self.constitution, stage=stage,
                                                           alternatives=r.alternatives,
                                                           include_alternative=r.include_alternative)
            self._log_block(stage, blocked, original)
            return Decision("block", message, stage, blocked.category, blocked.rail, reason, alternative,
                            tuple(verdicts), ms)
        rewrote = next((v for v in verdicts if v.action == "rewrite"), None)
        if rewrote is not None and current != original:
            return Decision("rewrite", current, stage, rewrote.category, rewrote.rail, rewrote.reason, "",
                            tuple(verdicts), ms)
        return Decision("allow", original, stage, verdicts=tuple(verdicts), latency_ms=ms)

    def _log_block(self, stage: Stage, verdict: RailVerdict, text: str) -> None:
        """One structured line per block: rail, category, score; never the text unless log_text."""
        record: dict[str, Any] = {"event": "guard_block", "stage": stage, "rail": verdict.rail,
                                  "category": verdict.category, "score": round(verdict.score, 4)}
        if self.policy.log_text:
            from alignkit.safety.pii import redact_pii

            record["text"] = redact_pii(text)[0][:500]  # even when asked, secrets never reach the log
        log.info(json.dumps(record))


def _last_user(message: str | Sequence[dict[str, str]]) -> str:
    if isinstance(message, str):
        return message
    users = [m.get("content", "") for m in message if m.get("role") == "user"]
    if not users:
        raise ValueError("the chat has no user message to check")
    return users[-1]


def _load_judge(cfg: Any) -> "Generator":
    from alignkit.generate.factory import get_generator

    return get_generator(cfg.model)
