"""Compiled kernels of the negative-binomial maximum-likelihood fits.

Everything is written in the contrast ``b = beta = 1/M`` and on histograms:
with ``T_j = sum_{k>j} h_k`` (the tail counts of a histogram ``h_k``) the
digamma sums of the score collapse into rational functions,
``sum_k h_k (psi(k+M) - psi(M)) = sum_j T_j / (M + j)``, so one evaluation
costs O(K) for K histogram bins and needs no special function.

For one histogram of N samples with mean ``m`` (the MLE of the mean at any
``M``), the profile score in ``b``, divided so that it stays finite at
``b = 0``, is

    F(b) = -dl/db = N m^2 h(m b) - sum_j j T_j / (1 + j b),
    F'(b) = N m^3 h'(m b) + sum_j j^2 T_j / (1 + j b)^2,

with ``h(x) = (x - log1p(x))/x^2``.  ``F(0) = N (m - var)/2``: a finite MLE
exists exactly when the (ddof=0) sample variance exceeds the mean, and
``F'(b_hat)`` is the observed information of ``b``, ``I(M) M^4``.

The derivation is in ``docs/explanation/statistics.md``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from xsvs_bluesky.core._contrast import MIN_PAIRS
from xsvs_bluesky.core._nbinom import _dh, _h

_TOL = 1e-12
_MAX_ITER = 200
_B_MAX = 1e12


@numba.njit(cache=True)
def _tails(counts):  # pragma: no cover - compiled
    """Tail counts ``T[g, j] = sum_{k>j} counts[g, k]`` and per-group stats.

    Returns ``(tails, jmax, n, s, q)`` with ``n`` the number of samples,
    ``s = sum_k k h_k`` and ``q = sum_k k (k-1) h_k / 2`` (photon pairs);
    ``tails[g, j] == 0`` for ``j >= jmax[g]``.
    """
    n_groups, n_bins = counts.shape
    tails = np.zeros((n_groups, n_bins))
    jmax = np.zeros(n_groups, dtype=np.int64)
    n = np.zeros(n_groups)
    s = np.zeros(n_groups)
    q = np.zeros(n_groups)
    for g in range(n_groups):
        running = 0.0
        top = 0
        for k in range(n_bins - 1, -1, -1):
            h = counts[g, k]
            if h != 0.0 and top == 0:
                top = k
            tails[g, k] = running
            running += h
            s[g] += k * h
            q[g] += 0.5 * k * (k - 1) * h
        n[g] = running
        jmax[g] = top
    return tails, jmax, n, s, q


@numba.njit(cache=True)
def _free_score(b, tails, jmax, n, m, adjust):  # pragma: no cover - compiled
    """``F(b)`` and ``F'(b)`` summed over groups with free (profiled) means.

    ``adjust`` adds the Cox-Reid term ``-1/2 sum_g m_g / (1 + m_g b)`` (the
    derivative of ``-1/2 sum_g log I_mu,g``), which removes the O(G/N) bias
    of profiling ``G`` means.
    """
    f = 0.0
    fp = 0.0
    for g in range(n.shape[0]):
        mg = m[g]
        if n[g] <= 0.0 or mg <= 0.0:
            continue
        x = mg * b
        f += n[g] * mg * mg * _h(x)
        fp += n[g] * mg * mg * mg * _dh(x)
        for j in range(1, jmax[g]):
            t = tails[g, j]
            d = 1.0 / (1.0 + j * b)
            f -= j * t * d
            fp += j * j * t * d * d
        if adjust:
            d = 1.0 / (1.0 + x)
            f -= 0.5 * mg * d
            fp += 0.5 * mg * mg * d * d
    return f, fp


@numba.njit(cache=True)
def _fit_free(counts, adjust, b_start):  # pragma: no cover - compiled
    """Profile-likelihood MLE of ``b`` for groups with free means.

    Returns ``(b, info, f0, converged, n_iter, n, s, q)`` where ``info`` is
    ``F'(b)`` (observed information of ``b``) and ``f0 = F(0)`` (``>= 0``:
    boundary, ``b = 0``); ``n``, ``s``, ``q`` are totals over groups.
    """
    tails, jmax, n, s, q = _tails(counts)
    m = np.zeros(n.shape[0])
    for g in range(n.shape[0]):
        if n[g] > 0.0:
            m[g] = s[g] / n[g]
    n_tot = n.sum()
    s_tot = s.sum()
    q_tot = q.sum()
    # F(0) = sum_g (N_g m_g^2 / 2 - q_g) [- 1/2 sum_g m_g], since
    # sum_j j T_j = sum_k h_k k (k-1) / 2 = q
    f0 = 0.0
    for g in range(n.shape[0]):
        f0 += 0.5 * n[g] * m[g] * m[g] - q[g]
        if adjust:
            f0 -= 0.5 * m[g]
    if f0 >= 0.0:
        fp0 = _free_score(0.0, tails, jmax, n, m, adjust)[1]
        return 0.0, fp0, f0, True, 0, n_tot, s_tot, q_tot
    if b_start <= 0.0 and s_tot > 0.0:
        # moments estimate of the pooled histogram, 2 q N / S^2 - 1
        b_start = 2.0 * q_tot * n_tot / (s_tot * s_tot) - 1.0
    lo = 0.0
    hi = math.inf
    x = b_start if b_start > 0.0 else 0.1
    converged = False
    it = 0
    fp = 0.0
    for it in range(1, _MAX_ITER + 1):  # noqa: B007 - it is returned
        f, fp = _free_score(x, tails, jmax, n, m, adjust)
        if f == 0.0:
            converged = True
            break
        if f < 0.0:
            lo = x
        else:
            hi = x
        xn = x - f / fp if fp > 0.0 else math.nan
        if not (xn > lo and xn < hi):
            xn = 4.0 * x if hi == math.inf else 0.5 * (lo + hi)
        if xn > _B_MAX:
            break
        if abs(xn - x) <= _TOL * x or (hi - lo) <= _TOL * x:
            # F' changes by O(1e-12) relative over the last step: keep it
            x = xn
            converged = True
            break
        x = xn
    if not (converged and fp > 0.0):
        fp = _free_score(x, tails, jmax, n, m, adjust)[1]
    return x, fp, f0, converged, it, n_tot, s_tot, q_tot


#: bits of the flag code returned by :func:`_fit_hist`
BIT_BOUNDARY = 1
BIT_LOW_STATISTICS = 2
BIT_NO_CONVERGENCE = 4
BIT_NO_DATA = 8


@numba.njit(cache=True)
def _fit_hist(h):  # pragma: no cover - compiled
    """Complete MLE of one histogram of any real dtype (the fast path).

    Returns ``(status, beta, beta_err, M, M_err, kbar, kbar_err, code, n)``
    where ``status`` is 0, or -1 when a count is negative or not finite
    (``kbar`` then holds the bad value), and ``code`` is a bit set of
    ``BIT_*`` flags.
    """
    nan = math.nan
    counts = np.empty((1, h.shape[0]))
    for k in range(h.shape[0]):
        v = float(h[k])
        if not (v >= 0.0 and v < math.inf):
            return -1, nan, nan, nan, nan, v, nan, 0, 0
        counts[0, k] = v
    b, info, f0, converged, _, n, s, q = _fit_free(counts, False, -1.0)
    n_int = int(round(n))
    if n <= 0.0 or s <= 0.0:
        kbar = 0.0 if n > 0.0 else nan
        return 0, nan, nan, nan, nan, kbar, nan, BIT_NO_DATA, n_int
    code = 0
    if f0 >= 0.0:
        code |= BIT_BOUNDARY
    if q < MIN_PAIRS:
        code |= BIT_LOW_STATISTICS
    if not converged:
        code |= BIT_NO_CONVERGENCE
    kbar = s / n
    var = max((2.0 * q + s - n * kbar * kbar) / (n - 1.0), 0.0) if n > 1.0 else 0.0
    beta_err = 1.0 / math.sqrt(info) if info > 0.0 else nan
    if b > 0.0:
        m_modes = 1.0 / b
        m_err = beta_err / (b * b)
    else:
        m_modes = math.inf
        m_err = math.inf
    return 0, b, beta_err, m_modes, m_err, kbar, math.sqrt(var / n), code, n_int


@numba.njit(cache=True)
def _eta_at(b, eta, n, s, w, off, scl):  # pragma: no cover - compiled
    """MLE of the log mean scale ``eta`` at fixed ``b`` (concave, Newton).

    Group ``g`` has contrast ``off[g] + scl[g] * b`` (see :func:`_fit_shared`).
    """
    for _ in range(100):
        grad = 0.0
        curv = 0.0
        scale = math.exp(eta)
        for g in range(n.shape[0]):
            if n[g] <= 0.0:
                continue
            mu = scale * w[g]
            bg = off[g] + scl[g] * b
            d = 1.0 / (1.0 + mu * bg)
            grad += (s[g] - n[g] * mu) * d
            curv -= mu * (n[g] + s[g] * bg) * d * d
        if curv >= 0.0:
            break
        step = -grad / curv
        step = max(-2.0, min(2.0, step))
        eta += step
        if abs(step) < 1e-14:
            break
    return eta


@numba.njit(cache=True)
def _shared_terms(b, eta, tails, jmax, n, s, w, off, scl, lw):  # pragma: no cover
    """Score and Hessian of ``l(eta, b)`` with group means ``exp(eta) w_g``.

    Group ``g`` has contrast ``b_g = off[g] + scl[g] * b`` and its terms of
    the ``b`` score (and of ``H_bb``, ``H_be``) are weighted by ``lw[g]``
    (``off = 0``, ``scl = lw = 1``: one shared contrast, plain likelihood;
    every term is then multiplied by an exact 1.0, so the sums are those of
    a shared ``b`` bit for bit).  Returns ``(dl/db, H_bb, H_be, H_ee)``.
    """
    score = 0.0
    h_bb = 0.0
    h_be = 0.0
    h_ee = 0.0
    scale = math.exp(eta)
    for g in range(n.shape[0]):
        if n[g] <= 0.0:
            continue
        bg = off[g] + scl[g] * b
        c = scl[g] * lw[g]
        c2 = c * scl[g]
        mu = scale * w[g]
        x = mu * bg
        d = 1.0 / (1.0 + x)
        excess = n[g] * mu - s[g]
        score += c * (-n[g] * mu * mu * _h(x) + mu * excess * d)
        h_bb -= c2 * (n[g] * mu * mu * mu * _dh(x) + mu * mu * excess * d * d)
        h_be += c * (excess * mu * d * d)
        h_ee -= mu * (n[g] + s[g] * bg) * d * d
        for j in range(1, jmax[g]):
            t = tails[g, j]
            dj = 1.0 / (1.0 + j * bg)
            score += c * (j * t * dj)
            h_bb -= c2 * (j * j * t * dj * dj)
    return score, h_bb, h_be, h_ee


@numba.njit(cache=True)
def _fit_shared(counts, w, b_start, off, scl, lw):  # pragma: no cover - compiled
    """Joint MLE of ``(kbar, b)`` for groups with means ``kbar * w_g``.

    Group ``g`` has the contrast ``off[g] + scl[g] * b``: ``off = 0``,
    ``scl = 1`` for one shared contrast; ``off = v_g``, ``scl = 1 + v_g``
    for a group whose pixels' means spread with relative variance ``v_g``
    (its pooled counts have the first two factorial moments of a
    negative binomial of that contrast).  ``lw`` weights each group's
    terms of the ``b`` score (1: the likelihood; else an estimating
    equation whose root weights the groups' contrasts by ``lw_g I_g``, and
    ``info_b`` is then not an information).  The mean scale is profiled
    (``eta = log kbar``, concave), and the profile score in ``b`` is
    solved by safeguarded Newton.  Returns
    ``(b, eta, info_b, var_eta, converged, n_iter, n, s, q)`` where
    ``info_b`` is the profile observed information of ``b`` and ``var_eta``
    the variance of ``eta`` from the inverse observed information matrix.
    """
    tails, jmax, n, s, q = _tails(counts)
    n_tot = n.sum()
    s_tot = s.sum()
    q_tot = q.sum()
    nw = 0.0
    for g in range(n.shape[0]):
        nw += n[g] * w[g]
    eta = math.log(s_tot / nw)
    score, h_bb, h_be, h_ee = _shared_terms(
        0.0, eta, tails, jmax, n, s, w, off, scl, lw
    )
    converged = True
    it = 0
    x = 0.0
    if score > 0.0:
        lo = 0.0
        hi = math.inf
        x = b_start if b_start > 0.0 else 0.1
        converged = False
        for it in range(1, _MAX_ITER + 1):  # noqa: B007 - it is returned
            eta = _eta_at(x, eta, n, s, w, off, scl)
            score, h_bb, h_be, h_ee = _shared_terms(
                x, eta, tails, jmax, n, s, w, off, scl, lw
            )
            # F = -score is increasing through the root; F' = profile info
            f = -score
            fp = -(h_bb - h_be * h_be / h_ee)
            if f == 0.0:
                converged = True
                break
            if f < 0.0:
                lo = x
            else:
                hi = x
            xn = x - f / fp if fp > 0.0 else math.nan
            if not (xn > lo and xn < hi):
                xn = 4.0 * x if hi == math.inf else 0.5 * (lo + hi)
            if xn > _B_MAX:
                break
            if abs(xn - x) <= _TOL * x or (hi - lo) <= _TOL * x:
                x = xn
                converged = True
                break
            x = xn
        eta = _eta_at(x, eta, n, s, w, off, scl)
        score, h_bb, h_be, h_ee = _shared_terms(
            x, eta, tails, jmax, n, s, w, off, scl, lw
        )
    info_b = -(h_bb - h_be * h_be / h_ee)
    det = h_bb * h_ee - h_be * h_be
    if x == 0.0:
        var_eta = -1.0 / h_ee  # boundary: b is fixed at 0
    else:
        var_eta = -h_bb / det if det > 0.0 else math.nan
    return x, eta, info_b, var_eta, converged, it, n_tot, s_tot, q_tot


@numba.njit(cache=True)
def _sample_info(mu, b):  # pragma: no cover - compiled
    """Return the expected information on ``b`` of one NB sample, per group.

    ``mu^3 h'(mu b) + sum_j j^2 P(K > j) / (1 + j b)^2`` for the law of mean
    ``mu[g]`` and contrast ``b[g]`` (``mu^2 / 2`` for Poisson counts,
    ``b = 0``).  The pmf comes from the ratio ``P(k+1)/P(k) = (1 + k b)
    mu / ((k + 1) (1 + mu b))`` in log space, so it holds at any ``b >= 0``.
    """
    out = np.zeros(mu.shape[0])
    for g in range(mu.shape[0]):
        m = mu[g]
        bg = b[g]
        if not m > 0.0:
            continue
        top = int(m + 12.0 * math.sqrt(m + m * m * bg) + 20.0)
        if bg > 0.0:
            logp = -math.log1p(m * bg) / bg
        else:
            logp = -m
        log_ratio = math.log(m) - math.log1p(m * bg)
        cum = math.exp(logp)
        total = 0.0
        for j in range(1, top + 1):
            logp += math.log((1.0 + (j - 1) * bg) / j) + log_ratio
            cum += math.exp(logp)
            tail = max(1.0 - cum, 0.0)  # P(K > j)
            total += j * j * tail / ((1.0 + j * bg) * (1.0 + j * bg))
        out[g] = m * m * m * _dh(m * bg) + total
    return out


@numba.njit(cache=True)
def _group_moments(label, u, factors, n_groups):  # pragma: no cover - compiled
    """Per-group sums of ``u`` and of ``u * factors[k]``, in pixel order.

    Row 0 of the ``(1 + len(factors), n_groups)`` result is
    ``np.bincount(label, weights=u, minlength=n_groups)``, row ``k + 1``
    ``np.bincount(label, weights=u * factors[k], ...)``: the same products
    added in the same order, so the same bits, in one pass instead of a
    product and a bincount per row.
    """
    out = np.zeros((factors.shape[0] + 1, n_groups))
    for i in range(label.shape[0]):
        g = label[i]
        v = u[i]
        out[0, g] += v
        for k in range(factors.shape[0]):
            out[k + 1, g] += v * factors[k, i]
    return out
