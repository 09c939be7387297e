"""Probe heads evaluated over a split: ridge (alpha by inner CV) and a small MLP.

Ridge works from sufficient statistics. One pass over the rows computes, for each
chunk (outer fold × inner fold), the row count, column sums, Gram matrix ``XᵀX``,
``Xᵀy`` and the sums of ``y`` and ``y²`` (in float64, after a global shift that
changes nothing but rounding). Every training set, inner training set and inner
validation set is a sum of chunks, so each fit is a p × p eigendecomposition and
each inner validation error is a quadratic form: no second pass, no refit over rows.
The result is exactly ``GridSearchCV(make_pipeline(StandardScaler(), Ridge()),
alphas, scoring="neg_mean_squared_error", cv=inner folds)`` refit on the outer
training fold (tests check this against scikit-learn).

Every head takes the same split description: ``fold`` (test fold per row), ``inner``
(inner CV fold per row), ``excluded`` (per fold, training rows left out of it: the
buffer around its test tiles) and ``only`` (the folds to fit; others are skipped).
With ``smearing`` each fold's record holds Duan's factor, the mean of exp(residual)
over its training rows, for a target modelled as log1p.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from urbanln_cli.evaluation.splits import TRAIN_ONLY

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-3, 6, 19))
_BLOCK_ROWS = 8192
_MAX_CHUNK_BYTES = 1 << 30


@dataclass
class _Stats:
    n: float
    s: np.ndarray
    G: np.ndarray
    sy: np.ndarray
    y1: float
    y2: float

    @classmethod
    def zeros(cls, p: int) -> _Stats:
        return cls(0.0, np.zeros(p), np.zeros((p, p)), np.zeros(p), 0.0, 0.0)

    def __add__(self, o: _Stats) -> _Stats:
        return _Stats(self.n + o.n, self.s + o.s, self.G + o.G, self.sy + o.sy, self.y1 + o.y1, self.y2 + o.y2)

    def __sub__(self, o: _Stats) -> _Stats:
        return _Stats(self.n - o.n, self.s - o.s, self.G - o.G, self.sy - o.sy, self.y1 - o.y1, self.y2 - o.y2)


def _stats(X: np.ndarray, y: np.ndarray, rows: np.ndarray, x_shift: np.ndarray, y_shift: float) -> _Stats:
    p = X.shape[1]
    out = _Stats.zeros(p)
    for start in range(0, len(rows), _BLOCK_ROWS):
        idx = rows[start : start + _BLOCK_ROWS]
        xb = X[idx].astype(np.float64)
        xb -= x_shift
        yb = y[idx] - y_shift
        out.n += len(idx)
        out.s += xb.sum(axis=0)
        out.G += xb.T @ xb
        out.sy += xb.T @ yb
        out.y1 += float(yb.sum())
        out.y2 += float(yb @ yb)
    return out


def _fit(T: _Stats, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise (StandardScaler on T), centre y, ridge for each alpha: raw-space coefficients (p × A) and
    intercepts (A)."""
    n = T.n
    mu = T.s / n
    ybar = T.y1 / n
    second = np.diag(T.G) / n
    var = second - mu**2
    constant = var <= 1e-12 * second
    scale = np.sqrt(np.where(constant, 1.0, var))
    C = T.G - n * np.outer(mu, mu)
    C[constant, :] = 0.0
    C[:, constant] = 0.0
    A = C / scale[:, None] / scale[None, :]
    b = (T.sy - n * mu * ybar) / scale
    b[constant] = 0.0
    from scipy.linalg import eigh

    lam, Q = eigh(A, driver="evr", check_finite=False)  # MRRR: steadily fast on Gram matrices
    lam = np.maximum(lam, 0.0)
    c = Q.T @ b
    W = Q @ (c[:, None] / (lam[:, None] + alphas[None, :]))
    B = W / scale[:, None]
    b0 = ybar - mu @ B
    return B, b0


def _mse(V: _Stats, B: np.ndarray, b0: np.ndarray) -> np.ndarray:
    quad = np.einsum("pa,pa->a", B, V.G @ B)
    sse = V.y2 - 2 * (V.sy @ B) - 2 * b0 * V.y1 + quad + 2 * b0 * (V.s @ B) + V.n * b0**2
    return np.maximum(sse, 0.0) / V.n


def ridge_cv(
    X: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    inner: np.ndarray,
    alphas=DEFAULT_ALPHAS,
    on_fold: Callable[[int], None] | None = None,
    excluded: dict[int, np.ndarray] | None = None,
    only: set[int] | None = None,
    smearing: bool = False,
) -> tuple[np.ndarray, list[dict]]:
    """Out-of-fold ridge predictions (NaN on train-only rows) and one record per fold.

    ``fold``: test fold id per row (TRAIN_ONLY = always trained on); ``inner``: inner CV fold id (0..K-1) per row.
    """
    X = np.asarray(X)
    y = np.asarray(y, np.float64)
    fold = np.asarray(fold, np.int64)
    inner = np.asarray(inner, np.int64)
    alphas = np.asarray(alphas, np.float64)
    n, p = X.shape
    k_inner = int(inner.max()) + 1 if n else 1
    folds = fold_ids(fold, only)
    x_shift = X.mean(axis=0, dtype=np.float64)
    y_shift = float(y.mean())

    chunk = (fold + 1) * k_inner + inner
    order = np.argsort(chunk, kind="stable")
    ids, starts = np.unique(chunk[order], return_index=True)
    ends = np.append(starts[1:], n)
    rows_of = {int(c): order[a:b] for c, a, b in zip(ids, starts, ends)}
    store = len(ids) * p * p * 8 <= _MAX_CHUNK_BYTES
    cache: dict[int, _Stats] = {}

    def chunk_stats(c: int) -> _Stats:
        if c not in rows_of:
            return _Stats.zeros(p)
        if c in cache:
            return cache[c]
        st = _stats(X, y, rows_of[c], x_shift, y_shift)
        if store:
            cache[c] = st
        return st

    if store:
        per_inner = [_Stats.zeros(p) for _ in range(k_inner)]
        for c in rows_of:
            per_inner[c % k_inner] = per_inner[c % k_inner] + chunk_stats(c)
    else:  # many folds (e.g. leave-one-group-out over many cities): two passes, bounded memory
        per_inner = [_stats(X, y, np.flatnonzero(inner == j), x_shift, y_shift) for j in range(k_inner)]
    total = _Stats.zeros(p)
    for st in per_inner:
        total = total + st

    pred = np.full(n, np.nan)
    records = []
    from threadpoolctl import threadpool_limits

    for k in folds:
        test_chunks = [chunk_stats((k + 1) * k_inner + j) for j in range(k_inner)]
        drop = np.asarray((excluded or {}).get(k, ()), np.int64)
        # the buffer's rows, per inner fold, come off the training fold and off each inner part
        drop_chunks = [_stats(X, y, drop[inner[drop] == j], x_shift, y_shift) for j in range(k_inner)]
        # p × p work on one BLAS thread: LAPACK's eigensolvers are mostly level-2 calls, and their
        # threads stall badly (seconds instead of tens of milliseconds) when other processes load the cores
        with threadpool_limits(1, "blas"):
            record, B, b0 = _ridge_fold(
                k, X, fold, test_chunks, drop_chunks, per_inner, total, alphas, x_shift, y_shift, pred
            )
        if smearing:
            train = np.setdiff1d(np.flatnonzero(fold != k), drop)
            fitted = np.concatenate(
                [
                    _predict(X, train[a : a + _BLOCK_ROWS], B, b0, x_shift, y_shift)
                    for a in range(0, len(train), _BLOCK_ROWS)
                ]
            )
            record["smearing"] = duan(y[train], fitted)
        records.append(record)
        if on_fold:
            on_fold(k)
    return pred, records


def fold_ids(fold: np.ndarray, only: set[int] | None = None) -> list[int]:
    """The test folds of ``fold`` (all, or those in ``only``), in order."""
    return sorted(int(f) for f in np.unique(fold) if f != TRAIN_ONLY and (only is None or int(f) in only))


def duan(z: np.ndarray, fitted: np.ndarray) -> float:
    """Duan's smearing factor: mean of exp(residual), so exp(prediction) × factor estimates E[exp(z)]."""
    if not len(z):
        return 1.0
    return float(np.mean(np.exp(np.asarray(z, np.float64) - np.asarray(fitted, np.float64))))


def _predict(X, idx, B, b0, x_shift, y_shift) -> np.ndarray:
    xb = X[idx].astype(np.float64) - x_shift
    return xb @ B[:, 0] + b0[0] + y_shift


def _ridge_fold(k, X, fold, test_chunks, drop_chunks, per_inner, total, alphas, x_shift, y_shift, pred):
    """Pick alpha by inner CV from chunk statistics, refit on the training fold, predict the test fold into ``pred``.

    Returns the fold's record and the refitted coefficients (raw space, shifted) and intercept."""
    test = _Stats.zeros(X.shape[1])
    for st in (*test_chunks, *drop_chunks):
        test = test + st
    train = total - test
    scores, used = np.zeros(len(alphas)), 0
    for j, test_part in enumerate(test_chunks):
        val = per_inner[j] - test_part - drop_chunks[j]
        fit = train - val
        if val.n < 1 or fit.n < 2:
            continue
        B, b0 = _fit(fit, alphas)
        scores += _mse(val, B, b0)
        used += 1
    best = int(np.argmin(scores)) if used else int(np.argmin(np.abs(np.log10(alphas))))  # no inner CV: alpha nearest 1
    B, b0 = _fit(train, alphas[best : best + 1])
    rows = np.flatnonzero(fold == k)
    for start in range(0, len(rows), _BLOCK_ROWS):
        idx = rows[start : start + _BLOCK_ROWS]
        pred[idx] = _predict(X, idx, B, b0, x_shift, y_shift)
    record = {
        "fold": k,
        "n_train": int(round(train.n)),
        "n_test": int(len(rows)),
        "alpha": float(alphas[best]),
        "alpha_at_edge": bool(used and len(alphas) > 1 and best in (0, len(alphas) - 1)),
        "inner_folds": used,
    }
    return record, B, b0


def mlp_cv(
    X: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    inner: np.ndarray,
    seed: int = 0,
    hidden: int = 256,
    max_epochs: int = 200,
    patience: int = 10,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    on_fold: Callable[[int], None] | None = None,
    n_classes: int = 0,
    excluded: dict[int, np.ndarray] | None = None,
    only: set[int] | None = None,
    smearing: bool = False,
) -> tuple[np.ndarray, list[dict]]:
    """Out-of-fold predictions of a D→hidden→1 MLP (ReLU, dropout 0.1), as in UrbanCLIP's probe.

    With ``n_classes`` > 0 it is a classifier: D→hidden→n_classes, cross-entropy, ``y`` holds class
    codes and the predictions are the most likely class (-1 outside the test folds).

    Inputs and target are standardised on the rows it fits. Early stopping watches
    the MSE on a validation part of the training fold: its rows of inner fold 0
    (spatial blocks when the split is spatial), or a random fifth when that part is
    empty or too large. The best epoch's weights are kept. Seeded per fold; on CPU
    two runs give the same numbers.
    """
    import torch

    X = np.asarray(X, np.float32)
    threads = torch.get_num_threads()
    if X.size < 4_000_000:
        # a small head gains nothing from threads, and OpenMP barriers stall badly when cores are busy
        torch.set_num_threads(1)
    try:
        settings = dict(
            seed=seed, hidden=hidden, max_epochs=max_epochs, patience=patience, lr=lr, weight_decay=weight_decay
        )
        return _mlp_folds(
            torch, X, y, fold, inner, settings, batch_size, on_fold, n_classes, excluded or {}, only, smearing
        )
    finally:
        torch.set_num_threads(threads)


def _mlp_folds(torch, X, y, fold, inner, settings, batch_size, on_fold, n_classes, excluded, only, smearing):
    seed, hidden, max_epochs, patience = (settings[k] for k in ("seed", "hidden", "max_epochs", "patience"))
    classify = n_classes > 0
    y = np.asarray(y, np.int64 if classify else np.float64)
    fold = np.asarray(fold, np.int64)
    inner = np.asarray(inner, np.int64)
    n, p = X.shape
    pred = np.full(n, -1, np.int64) if classify else np.full(n, np.nan)
    loss_fn = torch.nn.functional.cross_entropy if classify else torch.nn.functional.mse_loss
    records = []
    for k in fold_ids(fold, only):
        train = np.setdiff1d(np.flatnonzero(fold != k), np.asarray(excluded.get(k, ()), np.int64))
        val_mask = inner[train] == 0
        share = val_mask.mean() if len(train) else 0.0
        rng = np.random.default_rng(seed + 7919 * (k + 1))
        if not 0.05 <= share <= 0.5 or len(train) - val_mask.sum() < 2:
            val_mask = np.zeros(len(train), bool)
            val_mask[rng.permutation(len(train))[: max(1, len(train) // 5)]] = True
        fit_rows, val_rows = train[~val_mask], train[val_mask]
        mu = X[fit_rows].mean(axis=0)
        sd = X[fit_rows].std(axis=0)
        sd[sd < 1e-12] = 1.0
        y_mu = 0.0 if classify else float(y[fit_rows].mean())
        y_sd = 1.0 if classify else float(y[fit_rows].std()) or 1.0

        def prep(rows, mu=mu, sd=sd):  # this fold's scaling, bound now
            return torch.from_numpy(((X[rows] - mu) / sd).astype(np.float32))

        def target(rows, y_mu=y_mu, y_sd=y_sd):
            if classify:
                return torch.from_numpy(y[rows])
            return torch.from_numpy(((y[rows] - y_mu) / y_sd).astype(np.float32))

        def output(net, x):
            return net(x) if classify else net(x).squeeze(1)

        xf, xv = prep(fit_rows), prep(val_rows)
        yf, yv = target(fit_rows), target(val_rows)
        torch.manual_seed(seed + k)
        gen = torch.Generator().manual_seed(seed + k)
        net = torch.nn.Sequential(
            torch.nn.Linear(p, hidden),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(hidden, n_classes if classify else 1),
        )
        opt = torch.optim.Adam(net.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
        best, best_state, best_epoch, epoch = math.inf, None, 0, 0
        for epoch in range(1, max_epochs + 1):
            net.train()
            perm = torch.randperm(len(fit_rows), generator=gen)
            for start in range(0, len(fit_rows), batch_size):
                idx = perm[start : start + batch_size]
                opt.zero_grad()
                loss = loss_fn(output(net, xf[idx]), yf[idx])
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(output(net, xv), yv))
            if val_loss < best - 1e-7:
                best, best_epoch = val_loss, epoch
                best_state = {name: t.detach().clone() for name, t in net.state_dict().items()}
            elif epoch - best_epoch >= patience:
                break
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        rows = np.flatnonzero(fold == k)
        with torch.no_grad():
            if len(rows):
                out = output(net, prep(rows)).numpy()
                pred[rows] = out.argmax(axis=1) if classify else out.astype(np.float64) * y_sd + y_mu
        record = {
            "fold": k,
            "n_train": int(len(fit_rows)),
            "n_val": int(len(val_rows)),
            "n_test": int(len(rows)),
            "epochs": epoch,
            "best_epoch": best_epoch,
            ("val_cross_entropy" if classify else "val_mse"): best,
        }
        if smearing and not classify:
            with torch.no_grad():
                fitted = output(net, prep(train)).numpy().astype(np.float64) * y_sd + y_mu
            record["smearing"] = duan(y[train], fitted)
        records.append(record)
        if on_fold:
            on_fold(k)
    return pred, records
