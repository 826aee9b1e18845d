"""The five built-in reasoning-quality rubrics.

They define what every score and every delta in a prefdelta dataset means, so they are
written to be scored on any integer scale: each names what the top, the middle and the
bottom of the scale look like, and what the judge must ignore. A recipe may add its own
dimensions as ``{name, rubric}``; these stay the shared vocabulary.
"""

from __future__ import annotations

BUILTIN_RUBRICS: dict[str, str] = {
    "factuality": (
        "Are the facts, definitions, theorems and formulas the reasoning relies on true, "
        "and are they applied where their conditions hold? "
        "Top of the scale: every stated fact is correct and correctly applied. "
        "Middle: minor misstatements that do not change the argument. "
        "Bottom: false facts, invented theorems or misapplied formulas that the argument "
        "depends on. Judge the facts used, not whether the final answer is right."
    ),
    "strategy_coherence": (
        "Is the overall plan sound and followed? A good trace picks an approach that can "
        "solve the problem, commits to it, and changes course only for a stated reason. "
        "Top of the scale: a clear, appropriate strategy carried through to the end. "
        "Middle: a workable plan with detours or an unexplained switch of approach. "
        "Bottom: no discernible plan, approaches abandoned and restarted at random, or a "
        "strategy that cannot reach the answer."
    ),
    "step_coherence": (
        "Does each step follow from the previous ones? Check every inference locally: is it "
        "justified by what came before, with no gaps, circular steps or contradictions of "
        "earlier statements? "
        "Top of the scale: every step is a valid consequence of earlier steps. "
        "Middle: some steps skip justification but are recoverable. "
        "Bottom: non-sequiturs, contradictions, or conclusions that do not follow."
    ),
    "numerical_precision": (
        "Are calculations, algebra and numeric manipulations carried out correctly and to "
        "the precision the problem needs (units, rounding, signs, exact forms)? "
        "Top of the scale: every computation is exact and verifiable. "
        "Middle: slips that are caught and corrected, or harmless rounding. "
        "Bottom: arithmetic or algebraic errors that propagate into the result. "
        "A trace with no computation is judged on the quantities it does state."
    ),
    "signal_to_noise": (
        "How much of the trace moves the solution forward? Penalise repetition, filler, "
        "rambling self-talk, re-deriving what is already established and irrelevant "
        "digressions; do not penalise brief, useful verification. "
        "Top of the scale: nearly every sentence contributes. "
        "Middle: noticeable redundancy, but the useful reasoning is easy to follow. "
        "Bottom: the useful content is buried in repetition or noise."
    ),
}

DEFAULT_DIMENSIONS: tuple[str, ...] = tuple(BUILTIN_RUBRICS)
