"""KTAP from the kernel log: each test's verdict, told apart, whatever the nesting and dmesg's prefix."""

import pytest

from crossboard.deploy.ktap import KunitResult, parse, summary

pytestmark = pytest.mark.fast

# What dmesg shows after a boot with the kernel crate's doctests and a module's suite loaded: KUnit's
# own layout (lib/kunit/test.c), indentation 4 per level, a parameterised case, a skip, a failure.
LOG = """\
[    0.912001] KTAP version 1
[    0.912010] 1..1
[    0.912100]     KTAP version 1
[    0.912110]     # Subtest: rust_doctests_kernel
[    0.912120]     # speed: slow
[    0.912130]     1..3
[    0.913000]     ok 1 rust_doctest_kernel_alloc_kbox_rs_0
[    0.913100]     ok 2 rust_doctest_kernel_str_rs_1
[    0.913200]     ok 3 rust_doctest_kernel_sync_rs_2 # SKIP needs CONFIG_SMP
[    0.913300] # rust_doctests_kernel: pass:2 fail:0 skip:1 total:3
[    0.913400] ok 1 rust_doctests_kernel
[   41.000000] crossboard-mark-1234
[   41.100000] KTAP version 1
[   41.100010] 1..1
[   41.100100]     KTAP version 1
[   41.100110]     # Subtest: hello_rust
[   41.100120]     1..2
[   41.100200]     # greets: ASSERTION FAILED at modules/hello_rust/hello_rust.rs:40
[   41.100300]     not ok 1 greets
[   41.100400]         KTAP version 1
[   41.100410]         # Subtest: adds
[   41.100500]         ok 1 small
[   41.100600]         ok 2 large
[   41.100700]     ok 2 adds
[   41.100800] # hello_rust: pass:1 fail:1 skip:0 total:2
[   41.100900] not ok 1 hello_rust
[   41.200000] Hello from an out-of-tree Rust module (init)
"""


def test_each_test_is_ok_failed_or_skipped_under_its_suite():
    assert parse(LOG.splitlines()) == [
        KunitResult("rust_doctests_kernel", "rust_doctest_kernel_alloc_kbox_rs_0", "ok"),
        KunitResult("rust_doctests_kernel", "rust_doctest_kernel_str_rs_1", "ok"),
        KunitResult("rust_doctests_kernel", "rust_doctest_kernel_sync_rs_2", "skipped", "needs CONFIG_SMP"),
        KunitResult("hello_rust", "greets", "failed"),
        KunitResult("hello_rust.adds", "small", "ok"),
        KunitResult("hello_rust.adds", "large", "ok"),
    ]
    assert summary(parse(LOG.splitlines())) == [
        ("rust_doctests_kernel", 2, 0, 1),
        ("hello_rust", 0, 1, 0),
        ("hello_rust.adds", 2, 0, 0),
    ]


def test_a_suite_that_failed_before_any_case_is_one_failed_result_and_other_lines_are_ignored():
    lines = [
        "Booting Linux on physical CPU 0x0000000000 [0x410fd034]",
        "ok 7 not_in_any_subtest",  # a result outside any suite is not KUnit's
        "    KTAP version 1",
        "    # Subtest: broken_suite",
        "    1..4",
        "    # broken_suite: initializing suite failed",
        "not ok 2 broken_suite",
    ]
    assert parse(lines) == [KunitResult("broken_suite", "", "failed")]
    assert parse([]) == []


def test_a_suite_whose_results_stop_before_its_plan_is_failed_as_incomplete():
    # the audit's r06: a plan of three, two results, then an oops: never passed
    crashed = ["    # Subtest: crashy", "    1..3", "    ok 1 first", "    ok 2 second", "Unable to handle kernel paging request"]
    assert parse(crashed) == [
        KunitResult("crashy", "first", "ok"),
        KunitResult("crashy", "second", "ok"),
        KunitResult("crashy", "", "failed", "incomplete: 2 of 3 results, and no result line of its own"),
    ]
    short = ["    # Subtest: short", "    1..3", "    ok 1 first", "ok 1 short"]
    assert parse(short)[-1] == KunitResult("short", "", "failed", "incomplete: 1 of 3 results")


def test_misnesting_never_renames_a_suite():
    lines = [
        "    # Subtest: a",
        "    1..1",
        "        # Subtest: b",
        "        ok 1 x",
        "    # Subtest: c",  # not inside b: a and b never closed
        "    ok 1 z",
        "ok 1 c",
    ]
    assert [result.suite for result in parse(lines)] == ["a.b", "a.b", "a", "c"]
    assert parse(lines)[-1] == KunitResult("c", "z", "ok")


def test_a_hostile_log_is_read_in_bounded_memory_and_stops_where_it_says():
    """r06: 40,000 unclosed `# Subtest:` lines, then 40,000 results (0.69 MiB) took 114 s and 3 GiB."""
    import tracemalloc

    lines = [f"{' ' * 4 * min(i, 200)}# Subtest: s" for i in range(40_000)] + ["    ok 1 t"] * 40_000
    tracemalloc.start()
    results = parse(lines)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert results[-1].status == "failed" and "deeper than" in results[-1].reason
    flat = ["    # Subtest: s", *(f"    ok {i} t" for i in range(60_000))]
    assert parse(flat)[-1].reason.startswith("more than 20000 KTAP results")
    assert peak < 16 * 2**20  # the quadratic parser held 3 GiB here (its time: bench, not a test)
