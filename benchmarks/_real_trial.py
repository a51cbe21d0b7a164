"""The realistic trial of `bench_real_limits.py`: scikit-learn imported inside the function, a real fit.

A module of its own so that the function travels by reference (the "module" variant);
`bench_real_limits.py` defines the same body in its `__main__` for the by-value variant.
"""

from __future__ import annotations


def trial(seed: int) -> float:
    """Fit a small random forest on the digits and return its held-out accuracy."""
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier

    x, y = load_digits(return_X_y=True)
    model = RandomForestClassifier(n_estimators=10, random_state=seed).fit(x[:1200], y[:1200])
    return float(model.score(x[1200:], y[1200:]))
