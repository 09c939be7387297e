"""The classification probe's linear head: standardised logistic regression, C by inner CV.

Per outer fold it does what ``make_pipeline(StandardScaler(), LogisticRegressionCV(Cs,
cv=inner folds, scoring="neg_log_loss"))`` does when fitted on the training fold (tests
check this against scikit-learn): standardise on the training fold; fit the C path on
each inner fold's training part by L-BFGS on the mean log-loss plus ``‖W‖² / (2·C·n)``;
pick the C with the best mean validation log-loss; refit on the whole training fold. Two
classes: one logistic vector; more: a multinomial softmax. Classes are those present in
the training fold.

Two things make it fast without changing the optimum each fit converges to. The path
on the whole training fold is fitted first (smallest C first, each warm-started from the
last); it holds the refit for whichever C wins, and each inner fit starts from its C's
solution there (80% of the same rows, so a few steps away). And L-BFGS runs in
preconditioned coordinates: the weights are ``T v`` with ``T = Q (h·Λ + 1/(C·n))^-½``
from the training fold's feature covariance ``QΛQᵀ``, which bounds the loss's curvature
(h = ¼ for two classes, ½ for more), so correlated embedding dimensions no longer make
the problem ill-conditioned.

Large inputs (over 4 million values) are standardised to float32 for the n × p products,
which run about twice as fast as in float64; sums stay in float64.
The C path stops once the mean validation loss has risen at two successive Cs (larger
Cs cost the most iterations and would not win unless the curve climbs and falls again).
On large inputs the outer folds run in forked worker processes (X shared copy-on-write), each with one BLAS
thread: the folds are independent, so two cores take about half the time.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable

import numpy as np

from urbanln_cli.evaluation.heads import fold_ids

DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 2, 7))
_FLOAT32_ABOVE = 4_000_000
_BLOCK_ROWS = 2048  # 4 MB of float32 × 512: stays in cache between the two products
_WORKERS = 3  # fork workers for the outer folds at most (each holds copies of its training fold); on 2 cores,
# 3 workers split 5 folds more evenly than 2 (which leave a core idle while the 5th fold runs): 26.5 s vs 28.2 s
_SHARED = None  # the arguments of the folds, for forked workers to inherit
PATIENCE = 2  # the C path stops after the validation loss has risen at this many successive Cs


def logistic_cv(
    X: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    inner: np.ndarray,
    Cs=DEFAULT_CS,
    on_fold: Callable[[int], None] | None = None,
    excluded: dict[int, np.ndarray] | None = None,
    only: set[int] | None = None,
    tol: float = 1e-4,
    max_iter: int = 1000,
) -> tuple[np.ndarray, list[dict]]:
    """Out-of-fold class codes (-1 outside the test folds) and one record per fold (its C, sizes, iterations).

    ``y`` holds class codes 0..K-1; ``fold``, ``inner``, ``excluded`` and ``only`` as for ``heads.ridge_cv``.
    """
    X = np.asarray(X)
    y = np.asarray(y, np.int64)
    fold = np.asarray(fold, np.int64)
    inner = np.asarray(inner, np.int64)
    import scipy.optimize  # noqa: F401  (loads scipy's own OpenBLAS now, so that the limit below covers it too)
    from threadpoolctl import threadpool_limits

    # one BLAS thread, in numpy's and scipy's OpenBLAS: the p × p and p × K products are too small to share, and
    # threads stall badly (tens of times slower) when other processes load the cores; left unlimited, scipy's
    # (L-BFGS-B's) used a second core and made two fold workers no faster than one
    with threadpool_limits(1, "blas"):
        return _folds(X, y, fold, inner, np.sort(np.asarray(Cs, np.float64)), on_fold, excluded, only, tol, max_iter)


def _folds(X, y, fold, inner, Cs, on_fold, excluded, only, tol, max_iter) -> tuple[np.ndarray, list[dict]]:
    global _SHARED
    pred = np.full(len(y), -1, np.int64)
    ids = fold_ids(fold, only)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(len(ids), cores + 1, _WORKERS) if cores > 1 else 1
    _SHARED = (X, y, fold, inner, Cs, excluded, tol, max_iter)
    records = {}
    try:
        with contextlib.ExitStack() as stack:
            if workers < 2 or X.size <= _FLOAT32_ABOVE or "fork" not in multiprocessing.get_all_start_methods():
                results = map(_fold, ids)  # small inputs: starting workers would cost more than it saves
            else:
                # the folds are independent and each runs single-threaded BLAS: one process per core halves the
                # time; fork shares X without copying; leaving the block (Ctrl-C too) terminates the workers
                pool = stack.enter_context(multiprocessing.get_context("fork").Pool(workers))
                results = pool.imap_unordered(_fold, ids)
            for k, test, codes, record in results:
                pred[test] = codes
                records[k] = record
                if on_fold:
                    on_fold(k)
    finally:
        _SHARED = None
    return pred, [records[k] for k in ids]


def _fold(k: int) -> tuple[int, np.ndarray, np.ndarray, dict]:
    """One outer fold: its id, its test rows, their predicted class codes and the fold's record."""
    from threadpoolctl import threadpool_limits

    X, y, fold, inner, Cs, excluded, tol, max_iter = _SHARED
    with threadpool_limits(1, "blas"):  # again, in case a forked worker did not keep the parent's limit
        return _fit_fold(k, X, y, fold, inner, Cs, excluded, tol, max_iter)


def _fit_fold(k, X, y, fold, inner, Cs, excluded, tol, max_iter):
    dtype = np.float32 if X.size > _FLOAT32_ABOVE else np.float64
    train = np.setdiff1d(np.flatnonzero(fold != k), np.asarray((excluded or {}).get(k, ()), np.int64))
    test = np.flatnonzero(fold == k)
    classes, yk = np.unique(y[train], return_inverse=True)
    # mean and std in float64, as X[train].mean / .std(dtype=float64) give them (the same values up to rounding),
    # but on a float64 copy: numpy's axis-0 reductions of float32 into a float64 accumulator are ten times slower
    Xt = X[train].astype(np.float64)
    mu = Xt.mean(axis=0)
    Xt -= mu
    sd = np.sqrt(np.einsum("ij,ij->j", Xt, Xt) / max(len(Xt), 1))
    sd[sd < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mu), 1.0)] = 1.0  # StandardScaler's constant rule
    Xt = (Xt / sd).astype(dtype)
    record = {"fold": k, "n_train": int(len(train)), "n_test": int(len(test)), "classes": int(len(classes))}
    if len(classes) < 2:  # one class to learn: predict it
        return k, test, np.full(len(test), classes[0] if len(classes) else -1), record | {"C": None, "inner_folds": 0}
    basis = np.linalg.eigh((Xt.T @ Xt).astype(np.float64) / len(Xt))
    parts = []
    for j in np.unique(inner[train]):
        val = inner[train] == j
        if val.any() and not val.all():  # take by index: boolean row masks copy ten times slower
            fit_rows, val_rows = np.flatnonzero(~val), np.flatnonzero(val)
            parts.append((Xt.take(fit_rows, axis=0), yk[fit_rows], Xt.take(val_rows, axis=0), yk[val_rows]))
    used = len(parts)
    scores = np.full(len(Cs), np.inf)
    path, w, iterations, rises = [], None, [], 0
    for c, C in enumerate(Cs):
        w, steps = fit_logistic(Xt, yk, len(classes), C, w, tol, max_iter, basis)
        path.append(w)
        iterations.append(steps)
        if not used:
            continue
        scores[c] = sum(
            log_loss(
                x_val, y_val, fit_logistic(x_fit, y_fit, len(classes), C, w, tol, max_iter, basis)[0], len(classes)
            )
            for x_fit, y_fit, x_val, y_val in parts
        )
        rises = rises + 1 if c and scores[c] > scores[c - 1] else 0
        if rises >= PATIENCE:  # past the best C: the larger ones cost the most iterations and would not win
            break
    best = int(np.argmin(scores)) if used else int(np.argmin(np.abs(np.log10(Cs))))  # no inner CV: C nearest 1
    w, iterations = path[best], iterations[best]
    codes = classes[decision(((X[test] - mu) / sd).astype(dtype), w, len(classes))] if len(test) else test
    record |= {
        "C": float(Cs[best]),
        "C_at_edge": bool(used and len(Cs) > 1 and best in (0, len(Cs) - 1)),
        "inner_folds": used,
        "Cs_tried": int(np.isfinite(scores).sum()),
        "iterations": iterations,
    }
    return k, test, codes, record


def _logits(x: np.ndarray, w: np.ndarray, n_classes: int) -> np.ndarray:
    """[n, 1] logits for two classes, [n, K] for more; ``w`` is the flat (p + 1) × columns vector."""
    cols = 1 if n_classes == 2 else n_classes
    W = w.reshape(x.shape[1] + 1, cols)
    return (x @ W[:-1].astype(x.dtype)).astype(np.float64) + W[-1]


def _loss_grad(w: np.ndarray, x: np.ndarray, y: np.ndarray, n_classes: int, penalty: float):
    """Mean log-loss plus the penalty, and its gradient; block by block, so each block of rows is read from
    memory once for both products (the forward product and the gradient's)."""
    n, p = x.shape
    cols = 1 if n_classes == 2 else n_classes
    W = w.reshape(p + 1, cols)
    Wx = W[:-1].astype(x.dtype)
    loss, grad = 0.0, np.zeros_like(W)
    for start in range(0, n, _BLOCK_ROWS):
        xb, yb = x[start : start + _BLOCK_ROWS], y[start : start + _BLOCK_ROWS]
        z = (xb @ Wx).astype(np.float64) + W[-1]
        rows = np.arange(len(yb))
        if cols == 1:
            z = z[:, 0]
            loss += float(np.sum(np.logaddexp(0.0, z) - yb * z))
            resid = (0.5 * (1.0 + np.tanh(0.5 * z)) - yb)[:, None]  # sigmoid, without overflow
        else:
            top = z.max(axis=1, keepdims=True)
            lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
            loss += float(np.sum(lse - z[rows, yb]))
            resid = np.exp(z - lse[:, None])
            resid[rows, yb] -= 1.0
        grad[:-1] += (xb.T @ resid.astype(x.dtype)).astype(np.float64)
        grad[-1] += resid.sum(axis=0)
    grad /= n
    grad[:-1] += penalty * W[:-1]
    loss = loss / n + 0.5 * penalty * float(np.sum(W[:-1] ** 2))
    return loss, grad.ravel()


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    C: float,
    w0: np.ndarray | None,
    tol: float,
    max_iter: int,
    basis: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, int]:
    """Minimise mean log-loss + ‖W‖² / (2·C·n) (the intercept unpenalised) by L-BFGS, as sklearn's lbfgs does.

    ``basis``: eigenvalues and eigenvectors of the features' covariance, to precondition with (see the module).
    """
    from scipy.optimize import minimize

    p = x.shape[1]
    cols = 1 if n_classes == 2 else n_classes
    penalty = 1.0 / (C * len(y))
    w0 = np.zeros((p + 1) * cols) if w0 is None else w0
    if basis is None:
        T = np.eye(p)
    else:
        ev, Q = basis
        T = Q / np.sqrt((0.25 if cols == 1 else 0.5) * np.maximum(ev, 0.0) + penalty)  # Q · diag(scale)
    T_inv = (
        np.linalg.pinv(T)
        if basis is None
        else (Q * np.sqrt((0.25 if cols == 1 else 0.5) * np.maximum(ev, 0.0) + penalty)).T
    )

    def weights(v: np.ndarray) -> np.ndarray:
        V = v.reshape(p + 1, cols)
        return np.vstack([T @ V[:-1], V[-1:]]).ravel()

    def loss_grad(v: np.ndarray):
        loss, g = _loss_grad(weights(v), x, y, n_classes, penalty)
        G = g.reshape(p + 1, cols)
        return loss, np.vstack([T.T @ G[:-1], G[-1:]]).ravel()

    W0 = w0.reshape(p + 1, cols)
    v0 = np.vstack([T_inv @ W0[:-1], W0[-1:]]).ravel()
    result = minimize(
        loss_grad,
        v0,
        method="L-BFGS-B",
        jac=True,
        options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps},
    )
    return weights(result.x), int(result.nit)


def decision(x: np.ndarray, w: np.ndarray, n_classes: int) -> np.ndarray:
    """The most likely class code of each row."""
    z = _logits(x, w, n_classes)
    return (z[:, 0] > 0).astype(np.int64) if z.shape[1] == 1 else z.argmax(axis=1)


def log_loss(x: np.ndarray, y: np.ndarray, w: np.ndarray, n_classes: int) -> float:
    """Mean negative log-likelihood of ``y`` (probabilities clipped like sklearn's log_loss)."""
    z = _logits(x, w, n_classes)
    if z.shape[1] == 1:
        p1 = 0.5 * (1.0 + np.tanh(0.5 * z[:, 0]))
        proba = np.column_stack([1 - p1, p1])
    else:
        proba = np.exp(z - z.max(axis=1, keepdims=True))
        proba /= proba.sum(axis=1, keepdims=True)
    eps = np.finfo(proba.dtype).eps
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], eps, 1.0))))
