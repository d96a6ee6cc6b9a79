"""Batched log-likelihood of continuations: the multiple-choice engine.

Tokenization follows lm-evaluation-harness exactly (trailing spaces of the context move to the
continuation; continuation tokens = tokens of context+continuation after the context's tokens; an empty
context is conditioned on the BOS/EOS token), so `acc`/`acc_norm` match its numbers. What differs is
the compute:

- **one context, all choices**: a request's context is laid out once, followed by every continuation;
  a 4D attention mask lets each continuation see the context and itself only, and position ids restart
  after the context for each one. lm-eval runs context+choice once per choice.
- **packing by length**: requests are sorted by length and packed into rows of about `row_tokens`
  tokens (block-diagonal masks keep them apart), so there is almost no padding. Rows stay short (256)
  because attention under a custom mask costs row_length^2 whatever the mask hides; a request longer
  than a row gets a row of its own.
- **logits only where needed**: the vocabulary projection runs only at positions that predict a
  continuation token, and log-softmax is taken in chunks (no (B, T, V) fp32 tensor).

`mode="plain"` is the lm-eval layout (one row per context+continuation, right-padded). On its first batch
the packed path checks itself against the plain one and falls back to plain, with a warning, for a model
whose attention ignores custom 4D masks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["LoglikRequest", "LoglikResult", "LoglikScorer", "encode_pair"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoglikRequest:
    """Score each continuation given the context (summed log-probability of its tokens)."""

    context: str
    continuations: tuple[str, ...]


@dataclass
class LoglikResult:
    logprobs: list[float]  # sum of token log-probs, one per continuation
    greedy: list[bool]  # every continuation token was the argmax (lm-eval's is_greedy)
    tokens: list[int]  # continuation lengths in tokens
    context_tokens: int


@dataclass
class _Unit:
    """One context with the continuations scored against it, as token ids."""

    request: int
    ctx: list[int]
    conts: list[list[int]]
    cont_index: list[int]  # which continuation of the request each entry of `conts` is

    @property
    def length(self) -> int:
        return len(self.ctx) + sum(len(c) for c in self.conts)


@dataclass
class _Row:
    units: list[_Unit] = field(default_factory=list)
    length: int = 0


def encode_pair(tokenizer: Any, context: str, continuation: str, prefix_id: int) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) exactly as lm-evaluation-harness's causal `_encode_pair`."""
    if not context:
        return [prefix_id], tokenizer(continuation, add_special_tokens=False)["input_ids"]
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    return ctx, whole[len(ctx):]


class LoglikScorer:
    """Log-likelihoods of continuations under a causal LM (a transformers or peft-wrapped model)."""

    def __init__(self, model: Any, tokenizer: Any, *, mode: Literal["packed", "plain"] = "packed",
                 row_tokens: int = 256, tokens_per_batch: int = 4096, verify: bool = True,
                 max_length: int | None = None) -> None:
        if mode not in ("packed", "plain"):
            raise ValueError(f"mode must be 'packed' or 'plain', got {mode!r}")
        self.model, self.tokenizer, self.mode = model, tokenizer, mode
        self.row_tokens, self.tokens_per_batch, self._verify = row_tokens, tokens_per_batch, verify
        config = getattr(model, "config", None)
        self.max_length = max_length or getattr(config, "max_position_embeddings", None) or 2048
        ids = [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id]
        self.prefix_id = next(i for i in ids if i is not None)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.prefix_id
        self.tokens_scored = 0  # tokens run through the model (for throughput reports)

    # ---- public -------------------------------------------------------------------------------------
    def score(self, requests: Sequence[LoglikRequest]) -> list[LoglikResult]:
        """One result per request, in order. Deterministic up to float rounding regardless of batching."""
        import torch

        units = self._units(requests)
        results = [LoglikResult([0.0] * len(r.continuations), [False] * len(r.continuations),
                                [0] * len(r.continuations), 0) for r in requests]
        model = self.model
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for rows in self._batches(units):
                    for unit, values in zip([u for r in rows for u in r.units], self._score_rows(rows)):
                        res = results[unit.request]
                        res.context_tokens = len(unit.ctx)
                        for k, cont, (lp, greedy) in zip(unit.cont_index, unit.conts, values):
                            res.logprobs[k], res.greedy[k], res.tokens[k] = lp, greedy, len(cont)
        finally:
            model.train(was_training)
        return results

    # ---- layout -------------------------------------------------------------------------------------
    def _units(self, requests: Sequence[LoglikRequest]) -> list[_Unit]:
        units = []
        for i, req in enumerate(requests):
            if not req.continuations:
                raise ValueError(f"request {i} has no continuations")
            pairs = [encode_pair(self.tokenizer, req.context, c, self.prefix_id) for c in req.continuations]
            for k, (_, cont) in enumerate(pairs):
                if not cont:
                    raise ValueError(f"request {i}: continuation {req.continuations[k]!r} tokenizes to nothing")
            ctx = pairs[0][0]
            longest = max(len(c) for _, c in pairs)
            if len(ctx) + longest > self.max_length:  # keep the end of the context, as lm-eval does
                ctx = ctx[-(self.max_length - longest):] if longest < self.max_length else ctx[-1:]
            conts = [c[-self.max_length + 1:] for _, c in pairs]
            if self.mode == "packed":
                units.append(_Unit(i, ctx, conts, list(range(len(conts)))))
            else:
                units.extend(_Unit(i, ctx, [c], [k]) for k, c in enumerate(conts))
        return units

    def _batches(self, units: list[_Unit]) -> list[list[_Row]]:
        """Sort by length, pack (packed mode) into rows, group rows into batches within the token budget."""
        order = sorted(units, key=lambda u: -u.length)
        if self.mode == "plain":
            rows = [_Row([u], u.length) for u in order]
        else:
            rows = []
            for unit in order:  # first-fit decreasing
                row = next((r for r in rows if r.length + unit.length <= self.row_tokens), None)
                if row is None:
                    row = _Row()
                    rows.append(row)
                row.units.append(unit)
                row.length += unit.length
        batches: list[list[_Row]] = []
        for row in rows:  # rows arrive longest first, so the first row of a batch sets its width
            if batches and (len(batches[-1]) + 1) * batches[-1][0].length <= self.tokens_per_batch:
                batches[-1].append(row)
            else:
                batches.append([row])
        return batches

    # ---- compute ------------------------------------------------------------------------------------
    def _score_rows(self, rows: list[_Row]) -> list[list[tuple[float, bool]]]:
        import torch

        out = self._forward(rows, packed=self.mode == "packed")
        if self._verify and self.mode == "packed":
            self._verify = False
            # check the row's first unit and its last (offset positions, after other units) against plain rows
            picks = sorted({0, len(rows[0].units) - 1})
            got = [lp for k in picks for lp, _ in out[k]]
            want = [v[0][0] for k in picks for v in self._forward(self._singles(rows[0].units[k]), packed=False)]
            fp32 = self._mask_dtype() == torch.float32
            abs_tol, rel_tol = (1e-3, 1e-4) if fp32 else (0.1, 1e-2)  # bf16/fp16 sums differ by rounding
            if any(abs(a - b) > abs_tol + rel_tol * abs(b) for a, b in zip(got, want)):
                log.warning("this model's attention ignores custom 4D masks (packed %s vs plain %s); "
                            "falling back to one forward per choice", got, want)
                self.mode = "plain"
                units = [u for r in rows for u in r.units]
                return [[v[0] for v in self._forward(self._singles(u), packed=False)] for u in units]
        return out

    @staticmethod
    def _singles(unit: _Unit) -> list[_Row]:
        """One plain row per continuation of `unit` (the lm-eval layout)."""
        singles = [_Unit(unit.request, unit.ctx, [c], [k]) for k, c in zip(unit.cont_index, unit.conts)]
        return [_Row([s], s.length) for s in singles]

    def _forward(self, rows: list[_Row], *, packed: bool) -> list[list[tuple[float, bool]]]:
        """Run the rows as one batch; return (logprob, greedy) per continuation, per unit, in row order."""
        import torch

        device = next(self.model.parameters()).device
        width = max(r.length for r in rows)
        layout = _Layout(len(rows), width, self.pad_id)
        for b, row in enumerate(rows):
            layout.place_row(b, row)
        input_ids = torch.tensor(layout.ids, device=device)  # (B, T)
        keep = torch.tensor(layout.keep, device=device)  # (B, T) positions whose logits we need
        kwargs: dict[str, Any] = {"input_ids": input_ids}
        if packed:
            kwargs["attention_mask"] = layout.mask_4d(self._mask_dtype(), device)  # (B, 1, T, T)
            kwargs["position_ids"] = torch.tensor(layout.pos, device=device)
        else:
            kwargs["attention_mask"] = torch.tensor(layout.valid, device=device, dtype=torch.long)  # (B, T)
        logits = self._logits(kwargs, keep)  # (K, V) for the kept positions in row-major order
        self.tokens_scored += len(rows) * width  # padded positions cost compute too
        flat_index = (keep.flatten().long().cumsum(0) - 1).tolist()
        src = torch.tensor([flat_index[b * width + p] for b, p, _ in layout.targets], device=device)
        tgt = torch.tensor([t for _, _, t in layout.targets], device=device)
        token_lp, token_greedy = _gather_logprobs(logits, src, tgt)
        results: list[list[tuple[float, bool]]] = []
        cursor = 0
        for spans in layout.spans:  # per unit: token counts per continuation
            values = []
            for n in spans:
                values.append((float(token_lp[cursor : cursor + n].sum()), bool(token_greedy[cursor : cursor + n].all())))
                cursor += n
            results.append(values)
        return results

    def _mask_dtype(self) -> Any:
        return next(self.model.parameters()).dtype

    def _logits(self, kwargs: dict[str, Any], keep: Any) -> Any:
        """Logits at the kept positions, (K, V); falls back to full logits if `logits_to_keep` is unsupported."""
        try:
            logits = self.model(**kwargs, logits_to_keep=keep).logits
            if logits.dim() == 3:  # (1, K, V) in some versions
                logits = logits.reshape(-1, logits.shape[-1])
            if logits.shape[0] == int(keep.sum()):
                return logits
        except TypeError:
            pass
        logits = self.model(**kwargs).logits  # (B, T, V)
        return logits[keep]


def _gather_logprobs(logits: Any, src: Any, tgt: Any, chunk: int = 1024) -> tuple[Any, Any]:
    """Log-prob and is-argmax of target `tgt[i]` under row `src[i]` of `logits` (K, V), chunked over targets."""
    import torch

    lps, greedy = [], []
    for s in range(0, len(src), chunk):
        rows = logits[src[s : s + chunk]].float()  # (c, V)
        lse = torch.logsumexp(rows, dim=-1)
        picked = rows.gather(1, tgt[s : s + chunk, None]).squeeze(1)
        lps.append(picked - lse)
        greedy.append(rows.argmax(-1) == tgt[s : s + chunk])
    if not lps:
        return torch.zeros(0), torch.zeros(0, dtype=torch.bool)
    return torch.cat(lps), torch.cat(greedy)


class _Layout:
    """Token ids, positions, segment ids and logit targets of a padded batch of packed rows."""

    def __init__(self, rows: int, width: int, pad_id: int) -> None:
        self.width = width
        self.ids = [[pad_id] * width for _ in range(rows)]
        self.pos = [[0] * width for _ in range(rows)]
        self.unit = [[-1] * width for _ in range(rows)]  # which unit a token belongs to (-1 = padding)
        self.seg = [[-1] * width for _ in range(rows)]  # 0 = context, k+1 = continuation k
        self.valid = [[0] * width for _ in range(rows)]
        self.keep = [[False] * width for _ in range(rows)]
        self.targets: list[tuple[int, int, int]] = []  # (row, source position, target token id)
        self.spans: list[list[int]] = []  # per unit, continuation lengths (targets are in this order)
        self._units = 0

    def place_row(self, b: int, row: _Row) -> None:
        offset = 0
        for unit in row.units:
            offset = self._place_unit(b, offset, unit)

    def _place_unit(self, b: int, offset: int, unit: _Unit) -> int:
        uid, n_ctx = self._units, len(unit.ctx)
        self._units += 1
        for j, tok in enumerate(unit.ctx):
            self._put(b, offset + j, tok, j, uid, 0)
        cursor = offset + n_ctx
        for k, cont in enumerate(unit.conts):
            for j, tok in enumerate(cont):
                self._put(b, cursor + j, tok, n_ctx + j, uid, k + 1)
                source = offset + n_ctx - 1 if j == 0 else cursor + j - 1  # first token: last context position
                self.keep[b][source] = True
                self.targets.append((b, source, tok))
            cursor += len(cont)
        self.spans.append([len(c) for c in unit.conts])
        return cursor

    def _put(self, b: int, p: int, tok: int, position: int, uid: int, seg: int) -> None:
        self.ids[b][p], self.pos[b][p], self.unit[b][p], self.seg[b][p], self.valid[b][p] = tok, position, uid, seg, 1

    def mask_4d(self, dtype: Any, device: Any) -> Any:
        """Additive mask (B, 1, T, T): 0 where query q may attend key k, the dtype's minimum elsewhere."""
        import torch

        unit = torch.tensor(self.unit, device=device)  # (B, T)
        seg = torch.tensor(self.seg, device=device)
        q_unit, k_unit = unit[:, :, None], unit[:, None, :]
        q_seg, k_seg = seg[:, :, None], seg[:, None, :]
        idx = torch.arange(self.width, device=device)
        causal = idx[None, :, None] >= idx[None, None, :]  # (1, T, T): key at or before query
        same = (q_unit == k_unit) & (q_unit >= 0)
        visible = (k_seg == 0) | (k_seg == q_seg)  # the context, or the query's own continuation
        allowed = same & causal & visible
        allowed |= torch.eye(self.width, dtype=torch.bool, device=device)[None]  # padding sees itself: no NaN rows
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask[:, None]
