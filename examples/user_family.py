"""A user-defined parametric family, learned end to end (issue 29).

Every instance is the integral equation on [0, 1]

    (1 + a x) mu(x) = f(x) + 0.5 Int_0^1 exp(-(x - t)^2 / w) mu(t) dt + b Int_0^x mu(t) dt

with a random right-hand side f, a coefficient alpha(x) = 1 + a x, a Fredholm kernel of width
w and a Volterra term of strength b: four things that vary, none of which the convenient
``Family`` can say. The family is a function ``params -> Problem`` and a seeded distribution;
the operator's branch reads f and alpha at the sensors, w and b as numbers.

Run it as a script (a small data set, a short training; a few minutes on two cores)::

    python examples/user_family.py

or give the family to the command line (``FILE.py:NAME`` or ``module:NAME``)::

    daskie operator examples/user_family.py:FAMILY --n 300 --optimizer lshead --steps 2000
"""

import numpy as np

from daskie.problems import Domain, IntegralTerm, Problem
from daskie.problems.families import RandomField
from daskie.problems.parametric import ParametricFamily
from daskie.problems.spec import VOLTERRA

BOX = Domain((0.0,), (1.0,))
FIELD = RandomField(modes=6, length=0.2)
K = FIELD.n_coefficients(1)  # the field's coefficients come first


def build(p):
    """The problem of one instance: ``p`` = field coefficients, then a, w, b."""
    coef, (a, w, b) = p[:K], p[K:]
    return Problem(
        BOX, f=lambda x: FIELD.evaluate(coef, x, BOX.lower, BOX.upper),
        terms=[IntegralTerm(lambda x, t: np.exp(-(x[..., 0] - t[..., 0]) ** 2 / w), lam=0.5),
               IntegralTerm(lambda x, t: np.ones(np.broadcast_shapes(x.shape, t.shape)[:-1]),
                            lam=b, upper=(VOLTERRA,))],
        alpha=lambda x: 1.0 + a * x[..., 0])


def draw(rng):
    """One instance's parameters from ``rng``."""
    return np.concatenate([FIELD.draw(1, rng),
                           [rng.uniform(0.0, 1.0), rng.uniform(0.2, 1.0), rng.uniform(-0.5, 0.5)]])


FAMILY = ParametricFamily(
    "user-alpha-width-volterra", BOX, build, draw,
    params=tuple(f"c{k}" for k in range(K)) + ("a", "w", "b"), inputs=("f", "alpha", "w", "b"),
    reference_n=32,
    description="(1 + a x) mu = f + 0.5 Int exp(-(x - t)^2 / w) mu + b Int_0^x mu")


def main(n=240, steps=600):
    """Generate ``n`` instances, train a DeepONet on all but 40, print its held-out error."""
    from daskie.operator import learn_operator
    from daskie.train import Adam, LeastSquaresHead

    op = learn_operator(FAMILY, n, test=40, client="sync",
                        optimizer=LeastSquaresHead(Adam(lr=3e-3, decay=5e-4, steps=steps)))
    ev = op.evaluation.attrs
    print(f"{FAMILY.name}: relative L2 median {ev['rel_l2_median']:.2e}, p95 "
          f"{ev['rel_l2_p95']:.2e} on {ev['n_test']} held-out instances (the mean training "
          f"solution: {ev['baseline_rel_l2_median']:.2f}); {op.theta.numel()} parameters")
    return op


if __name__ == "__main__":
    main()
