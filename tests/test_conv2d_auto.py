"""algo="auto" for conv2d: a rule per (ISA, thread count), visible, and every algorithm it can
choose agrees with the float64 reference on the shapes where the rule switches."""
import numpy as np
import pytest

import pydl
from pydl import _core, ops
from pydl.layers import Conv2D
from pydl.ops import conv as conv_ops
from reference_conv import conv2d_backward_ref, conv2d_ref

TOL32 = {"direct": 2e-5, "im2col": 2e-5, "winograd_f2": 2e-5, "winograd_f4": 2e-4}


def _rel(got, want):
    return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / max(1e-30, np.max(np.abs(want))))


def _switch_shapes(rule):
    """(N, C, H, K) 3x3 / pad 1 cases on both sides of every threshold of one rule."""
    c0 = rule["direct_max_c"]
    m = rule["wino_min_ck"]
    f4 = rule["f4_min_out"]
    return sorted({
        (2, c0, 9, 5), (2, c0 + 1, 9, 5),            # direct <-> the next rule
        (1, max(c0 + 1, m - 1), 7, m), (1, max(c0 + 1, m), 7, m - 1), (1, max(c0 + 1, m), 7, m),
        (1, max(c0 + 1, m), f4 - 1, m), (1, max(c0 + 1, m), f4, m),  # F(2x2) <-> F(4x4)
    })


def _all_rules():
    return sorted(conv_ops.AUTO_RULES)


@pytest.mark.parametrize("key", _all_rules(), ids=lambda k: f"{k[0]}-{k[1]}thr")
def test_every_choice_of_auto_matches_reference_at_switch_points(key):
    rule = conv_ops.AUTO_RULES[key]
    rng = np.random.default_rng(7)
    for (N, C, H, K) in _switch_shapes(rule):
        x = rng.standard_normal((N, C, H, H)).astype(np.float32)
        w = (rng.standard_normal((K, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
        b = rng.standard_normal(K).astype(np.float32)
        dy = rng.standard_normal((N, K, H, H)).astype(np.float32)
        ref = conv2d_ref(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), (1, 1), (1, 1, 1, 1))
        rdx, rdw, rdb = conv2d_backward_ref(dy.astype(np.float64), x.astype(np.float64), w.astype(np.float64),
                                            (1, 1), (1, 1, 1, 1))
        for algo in TOL32:
            y = ops.conv2d(x, w, b, padding=1, algo=algo)
            assert _rel(y, ref) <= TOL32[algo], (key, (N, C, H, K), algo)
            dx, dw, db = ops.conv2d_backward(dy, x, w, padding=1, algo=algo)
            assert _rel(dx, rdx) <= TOL32[algo], (key, (N, C, H, K), algo, "dx")
            assert _rel(dw, rdw) <= 2e-5 and _rel(db, rdb) <= 2e-5


def test_rule_switches_where_the_table_says():
    isa = _core.selected_isa()
    for threads in (1, 2):
        old = pydl.get_num_threads()
        pydl.set_num_threads(threads)
        try:
            rule = conv_ops.auto_rule()
            assert rule is conv_ops.AUTO_RULES[(isa, threads)]
            c0, m, f4 = rule["direct_max_c"], rule["wino_min_ck"], rule["f4_min_out"]
            assert ops.conv2d_algo((1, c0, 9, 9), (8, c0, 3, 3), padding=1) == "direct"
            big_c = max(c0 + 1, m)
            want_small = "winograd_f2" if rule["winograd"] else "im2col"
            want_big = "winograd_f4" if rule["winograd"] else "im2col"
            assert ops.conv2d_algo((1, big_c, f4 - 1, f4 - 1), (m, big_c, 3, 3), padding=1) == want_small
            assert ops.conv2d_algo((1, big_c, f4, f4), (m, big_c, 3, 3), padding=1) == want_big
            # not 3x3 / stride 1: im2col whatever the rule
            assert ops.conv2d_algo((1, big_c, 20, 20), (m, big_c, 3, 3), stride=2, padding=1) == "im2col"
            assert ops.conv2d_algo((1, big_c, 20, 20), (m, big_c, 5, 5), padding=2) == "im2col"
            name, why = ops.conv2d_explain((1, big_c, f4, f4), (m, big_c, 3, 3), padding=1)
            assert name == want_big
            assert f"auto on {isa}, {threads} thread" in why
        finally:
            pydl.set_num_threads(old)


def test_explain_forced_and_bad():
    assert ops.conv2d_explain((1, 3, 8, 8), (4, 3, 3, 3), padding=1, algo="im2col") == ("im2col", "im2col requested")
    with pytest.raises(ValueError, match="needs a 3x3 filter"):
        ops.conv2d_explain((1, 3, 8, 8), (4, 3, 5, 5), algo="winograd_f2")
    with pytest.raises(ValueError, match="unknown algo"):
        ops.conv2d_explain((1, 3, 8, 8), (4, 3, 3, 3), algo="fastest")
    with pytest.raises(ValueError, match="no algo='auto' rule"):
        conv_ops.auto_rule("sve", 1)


def test_every_isa_and_thread_count_has_a_rule():
    for isa in ("avx512", "avx2", "generic"):
        for threads in (1, 2, 64):
            rule = conv_ops.auto_rule(isa, threads)
            assert set(rule) == {"direct_max_c", "winograd", "wino_min_ck", "f4_min_out"}


def test_layer_algo_follows_thread_count():
    layer = Conv2D(16, 3, padding="same", input_shape=(16, 56, 56))
    layer.build((None, 16, 56, 56))
    old = pydl.get_num_threads()
    try:
        for threads in (1, 2):
            pydl.set_num_threads(threads)
            want, why = ops.conv2d_explain((1, 16, 56, 56), (16, 16, 3, 3), padding="same")
            assert layer.algo_used == want and layer.algo_reason == why
    finally:
        pydl.set_num_threads(old)
    assert Conv2D(4, 3).algo_used is None


def test_auto_rule_is_the_same_for_every_thread_count():
    """A result must not depend on the thread count, so neither may the algorithm auto picks."""
    from pydl.ops.conv import AUTO_RULES
    for isa in {k[0] for k in AUTO_RULES}:
        assert AUTO_RULES[(isa, 1)] == AUTO_RULES[(isa, 2)], isa
