"""How responsive the widgets are: explorer updates and a 100 x 100 map, timed on this machine.

    python benchmarks/widget_latency.py

Prints the median of 10 explorer updates (target: under 300 ms) and the time of a 100 x 100
map viewer update on a fresh grid (target: under 5 s), both on data/add3_nano. Not a test:
absolute times depend on the machine.
"""
import statistics
import time

from equiv_tools.views.widgets import EquivalenceExplorer, MapViewer


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    explorer = EquivalenceExplorer(a=1349, b=2705, model="kit/add3_nano")
    updates = [timed(lambda a=a: setattr(explorer.a_text, "value", str(a))) for a in range(1350, 1360)]
    print(f"explorer update: median {1000 * statistics.median(updates):.0f} ms, max {1000 * max(updates):.0f} ms over 10 updates")

    viewer = MapViewer(a_range=(1000, 1009), b_range=(3000, 3009), model="kit/add3_nano")
    viewer.a_to.value = 1099  # a 100 x 10 map
    fresh = timed(lambda: setattr(viewer.b_to, "value", 3099))  # one typed value: a fresh 100 x 100 map
    print(f"map viewer, fresh 100 x 100 grid: {fresh:.2f} s ({len(viewer.frame):,} pairs)")
    cached = timed(lambda: setattr(viewer.relation, "value", "(a + b) mod 10^3"))
    print(f"map viewer, relation switch on the cached grid: {1000 * cached:.0f} ms")


if __name__ == "__main__":
    main()
