"""Network simplex for the transportation problem (exact OT), as one Numba kernel.

The problem ``min <P, C>`` s.t. ``P 1 = a``, ``P^T 1 = b``, ``P >= 0`` is a min-cost flow on the complete
bipartite graph: sources ``0..n-1`` (supply a), sinks ``n..n+m-1`` (demand b), arc ``e = i*m + j`` from source
``i`` to sink ``n + j`` with cost ``C[i, j]`` and no capacity.  The primal network simplex (Dantzig; the
spanning-tree data structure and the block-search pivot rule of LEMON's ``NetworkSimplex``, Kovacs,
"Minimum-cost flow algorithms: an experimental evaluation", 2015, which POT's C++ solver also derives from)
keeps a spanning tree of basic arcs rooted at an artificial node ``root = n + m``, with one artificial arc per
node (source -> root at cost 0, root -> sink at a cost larger than any real path), and

- node potentials ``pi`` with zero reduced cost ``C_e + pi[src] - pi[tgt]`` on tree arcs;
- the tree as parent pointers plus a preorder thread (``thread``/``rev_thread``), subtree sizes
  (``succ_num``) and the last node of each subtree in the thread (``last_succ``), so that moving a subtree
  costs its size, not the tree's;
- the flow of the tree arc above each node (``tflow[u]`` on ``pred[u]``; ``up[u]`` says whether that arc
  points from u to its parent): non-tree arcs carry no flow (no capacities), so n*m flows are never stored.

A pivot scans arcs in blocks of ~sqrt(n*m) (cyclically, from where the last scan stopped) for the most
negative reduced cost, pushes flow around the cycle it closes (the leaving arc is the last blocking one met
from the apex, which keeps the tree strongly feasible and rules out cycling), re-hangs the cut subtree and
shifts its potentials.  A reduced cost counts as negative below ``-EPS * max(|pi_src|, |pi_tgt|, |C_e|)``.

Everything is float64 (the caller scales costs and masses); the kernel is serial (one pivot depends on the
last) and allocates O(n + m) besides an int8 arc state of n*m entries.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ._rows import jit

__all__ = ["network_simplex", "EPS"]

EPS = 2.220446049250313e-15       # 10 float64 epsilons: the relative size of a reduced cost we act on

# status codes
OPTIMAL, MAX_ITER, INFEASIBLE, UNBOUNDED = 0, 1, 2, 3


@jit(parallel=False, inline="always")
def _arc_ends(e, n, m, nm):
    """(source, target) nodes of arc ``e``: real arcs ``i*m + j``, artificial arcs ``nm + u``."""
    if e < nm:
        i = e // m
        return i, n + e - i * m
    u = e - nm
    if u < n:
        return u, n + m
    return n + m, u


@jit(parallel=False, inline="always")
def _arc_cost(e, Cf, nm, n, art):
    if e < nm:
        return Cf[e]
    return 0.0 if e - nm < n else art


@jit(parallel=False)
def _pivot(in_arc, Cf, n, m, nm, art, parent, pred, up, thread, rev_thread, succ_num, last_succ, pi, tflow,
           state, dirty):
    """One network-simplex pivot on the entering arc ``in_arc`` (its reduced cost is negative).

    Returns False when the cycle has no blocking arc (unbounded; cannot happen with finite costs)."""
    src, tgt = _arc_ends(in_arc, n, m, nm)
    # apex of the cycle: walk up from the deeper side (smaller subtree = deeper)
    u, v = src, tgt
    while u != v:
        if succ_num[u] < succ_num[v]:
            u = parent[u]
        else:
            v = parent[v]
    join = u
    # flow goes src -> tgt on the entering arc, down from the apex to src, up from tgt to the apex; the
    # arcs that carry flow against that direction block.  Ties: the last blocking arc met from the apex
    # along the cycle (strict on the src side, non-strict on the tgt side).
    delta = math.inf
    u_out = -1
    side = 0
    u = src
    while u != join:
        if up[u] and tflow[u] < delta:
            delta = tflow[u]
            u_out = u
            side = 1
        u = parent[u]
    u = tgt
    while u != join:
        if not up[u] and tflow[u] <= delta:
            delta = tflow[u]
            u_out = u
            side = 2
        u = parent[u]
    if side == 0:
        return False
    if side == 1:
        u_in, v_in = src, tgt
    else:
        u_in, v_in = tgt, src
    # push delta around the cycle
    if delta > 0.0:
        u = src
        while u != join:
            tflow[u] += -delta if up[u] else delta
            u = parent[u]
        u = tgt
        while u != join:
            tflow[u] += delta if up[u] else -delta
            u = parent[u]
    state[in_arc] = 0
    if pred[u_out] < nm:
        state[pred[u_out]] = 1

    # ---- re-hang the subtree of u_out below v_in, re-rooted at u_in (the "stem" is the path u_in .. u_out)
    old_rev_thread = rev_thread[u_out]
    old_succ_num = succ_num[u_out]
    old_last_succ = last_succ[u_out]
    v_out = parent[u_out]
    last = last_succ[u_in]                # last node of the part of the stem node's subtree moved so far
    after = thread[last]                  # the node the thread reaches after that part
    if old_rev_thread == v_in:            # u_out came right after v_in (then join == v_out)
        cont = thread[old_last_succ]
    else:
        cont = thread[v_in]
    thread[v_in] = u_in
    nd = 0
    dirty[nd] = v_in
    nd += 1
    stem = u_in
    par_stem = v_in
    while stem != u_out:
        nxt = parent[stem]
        thread[last] = nxt                # the next stem node follows the moved part
        dirty[nd] = last
        nd += 1
        before = rev_thread[stem]         # cut stem's subtree out of the thread where it was
        thread[before] = after
        rev_thread[after] = before
        parent[stem] = par_stem
        par_stem = stem
        stem = nxt
        # the rest of the new stem node's subtree ends at its old last successor, unless the part just
        # moved was that subtree's tail: then it ends right before the part moved
        if last_succ[stem] == last_succ[par_stem]:
            last = rev_thread[par_stem]
        else:
            last = last_succ[stem]
        after = thread[last]
    parent[u_out] = par_stem
    thread[last] = cont
    rev_thread[cont] = last
    last_succ[u_out] = last
    if old_rev_thread != v_in:
        thread[old_rev_thread] = after
        rev_thread[after] = old_rev_thread
    for k in range(nd):
        w = dirty[k]
        rev_thread[thread[w]] = w
    # preds, flows, directions, sizes and last successors along the reversed stem
    sc = 0
    ls = last_succ[u_out]
    u = u_out
    while u != u_in:
        w = parent[u]
        pred[u] = pred[w]
        tflow[u] = tflow[w]
        up[u] = not up[w]
        sc += succ_num[u] - succ_num[w]
        succ_num[u] = sc
        last_succ[w] = ls
        u = w
    pred[u_in] = in_arc
    tflow[u_in] = delta
    up[u_in] = u_in == src
    succ_num[u_in] = old_succ_num
    # last successors above v_in and v_out, subtree sizes up to the apex
    up_in = -1
    up_out = -1
    if last_succ[join] == v_in:
        up_out = join
    else:
        up_in = join
    u = v_in
    while u != up_in and last_succ[u] == v_in:
        last_succ[u] = last_succ[u_out]
        u = parent[u]
    if join != old_rev_thread and v_in != old_rev_thread:
        u = v_out
        while u != up_out and last_succ[u] == old_last_succ:
            last_succ[u] = old_rev_thread
            u = parent[u]
    else:
        u = v_out
        while u != up_out and last_succ[u] == old_last_succ:
            last_succ[u] = last_succ[u_out]
            u = parent[u]
    u = v_in
    while u != join:
        succ_num[u] += old_succ_num
        u = parent[u]
    u = v_out
    while u != join:
        succ_num[u] -= old_succ_num
        u = parent[u]
    # potentials of the moved subtree: zero reduced cost on the entering arc
    c = _arc_cost(in_arc, Cf, nm, n, art)
    sigma = pi[v_in] - pi[u_in] - c if up[u_in] else pi[v_in] - pi[u_in] + c
    end = thread[last_succ[u_in]]
    u = u_in
    while u != end:
        pi[u] += sigma
        u = thread[u]
    return True


@jit(parallel=False)
def _price(Cf, n, m, nm, pi, state, start, block):
    """Block search: from arc ``start``, scan blocks of ``block`` arcs (cyclically) and stop after the first
    block whose best reduced cost is below -EPS * scale.  Returns (entering arc or -1, next start)."""
    best = 0.0
    best_e = -1
    e = start
    i = e // m
    j = e - i * m
    pi_i = pi[i]
    cnt = block
    for _ in range(nm):
        if state[e]:
            c = Cf[e] + pi_i - pi[n + j]
            if c < best:
                best = c
                best_e = e
        e += 1
        j += 1
        if j == m:
            j = 0
            i += 1
            if e == nm:
                e = 0
                i = 0
            pi_i = pi[i]
        cnt -= 1
        if cnt == 0:
            cnt = block
            if best_e >= 0:
                bi = best_e // m
                scale = max(abs(pi[bi]), abs(pi[n + best_e - bi * m]), abs(Cf[best_e]))
                if best < -EPS * scale:
                    return best_e, e
    if best_e >= 0:
        bi = best_e // m
        scale = max(abs(pi[bi]), abs(pi[n + best_e - bi * m]), abs(Cf[best_e]))
        if best < -EPS * scale:
            return best_e, e
    return -1, e


@jit(parallel=False)
def network_simplex(a, b, C, max_iter, G, alpha, beta):
    """Solve the transportation problem; a (n,) > 0, b (m,) > 0 with equal sums, C (n, m) C-contiguous float64.

    Writes the plan into ``G`` (n, m, zero-initialised by the caller) and the dual potentials into
    ``alpha`` (n,), ``beta`` (m,) (``alpha_i + beta_j <= C_ij``, equality where ``G_ij > 0``).  Returns
    ``(status, n_pivots, residual)``: status 0 optimal, 1 ``max_iter`` pivots reached (plan feasible only if
    the residual artificial flow is 0), 2 infeasible, 3 unbounded; ``residual`` is the largest flow left on an
    artificial arc.  ``max_iter <= 0`` means no limit.
    """
    n, m = C.shape
    N = n + m
    nm = n * m
    root = N
    Cf = C.reshape(nm)
    cmax = 0.0
    for e in range(nm):
        cmax = max(cmax, abs(Cf[e]))
    art = (cmax + 1.0) * (N + 1)
    parent = np.empty(N + 1, np.int64)
    pred = np.empty(N + 1, np.int64)
    up = np.empty(N + 1, np.bool_)
    thread = np.empty(N + 1, np.int64)
    rev_thread = np.empty(N + 1, np.int64)
    succ_num = np.empty(N + 1, np.int64)
    last_succ = np.empty(N + 1, np.int64)
    pi = np.zeros(N + 1)
    tflow = np.zeros(N + 1)
    dirty = np.empty(N + 1, np.int64)
    state = np.ones(nm, np.int8)
    parent[root] = -1
    pred[root] = -1
    up[root] = False
    thread[root] = 0
    rev_thread[0] = root
    succ_num[root] = N + 1
    last_succ[root] = N - 1
    for u in range(N):
        parent[u] = root
        pred[u] = nm + u
        thread[u] = u + 1
        rev_thread[u + 1] = u
        succ_num[u] = 1
        last_succ[u] = u
        if u < n:
            up[u] = True
            pi[u] = 0.0
            tflow[u] = a[u]
        else:
            up[u] = False
            pi[u] = art
            tflow[u] = b[u - n]
    # initial pivots: the cheapest arc into each sink
    for j in range(m):
        bi = 0
        bc = C[0, j]
        for i in range(1, n):
            if C[i, j] < bc:
                bc = C[i, j]
                bi = i
        e = bi * m + j
        if state[e] and bc + pi[bi] - pi[n + j] < 0.0:
            if not _pivot(e, Cf, n, m, nm, art, parent, pred, up, thread, rev_thread, succ_num, last_succ, pi,
                          tflow, state, dirty):
                return UNBOUNDED, 0, math.inf
    block = max(int(math.sqrt(nm)), 10)
    start = 0
    it = 0
    status = OPTIMAL
    while True:
        e, start = _price(Cf, n, m, nm, pi, state, start, block)
        if e < 0:
            break
        if max_iter > 0 and it >= max_iter:
            status = MAX_ITER
            break
        if not _pivot(e, Cf, n, m, nm, art, parent, pred, up, thread, rev_thread, succ_num, last_succ, pi, tflow,
                      state, dirty):
            return UNBOUNDED, it, math.inf
        it += 1
    resid = 0.0
    for u in range(N):
        if pred[u] >= nm:
            resid = max(resid, tflow[u])
        else:
            e = pred[u]
            i = e // m
            G[i, e - i * m] = tflow[u]
    for i in range(n):
        alpha[i] = -pi[i]
    for j in range(m):
        beta[j] = pi[n + j]
    return status, it, resid
