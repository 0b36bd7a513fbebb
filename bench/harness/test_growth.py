"""Checks of the generated parts of the report that do not need a run: the growth sentence
(harness/growth.py) and the goal links (harness/goals.py). Run by `bench/run.sh --smoke`:

    python -m unittest bench/harness/test_growth.py   (from bench/: python -m unittest harness.test_growth)
"""

import unittest

from harness import goals, growth


class Growth(unittest.TestCase):
    def test_linear_throughout(self):
        s = growth.describe([100, 1_000, 10_000], [1.0, 10.0, 100.0], "futures")
        self.assertTrue(s.startswith("grows linearly from 100 to 10,000 futures"), s)
        self.assertTrue(growth.linear([100, 1_000, 10_000], [1.0, 10.0, 100.0]))

    def test_bend_is_where_the_class_changes(self):
        xs = [1, 10, 100, 1_000, 10_000]
        ys = [100.0, 101.0, 99.0, 990.0, 9_900.0]  # flat, flat, linear, linear
        s = growth.describe(xs, ys)
        self.assertIn("stays flat from 1 to 100, then grows linearly from 100 to 10,000", s)
        self.assertIn("bending at 100", s)
        self.assertFalse(growth.linear(xs, ys))

    def test_classes(self):
        self.assertEqual(growth.klass(0.05), "flat")
        self.assertEqual(growth.klass(0.5), "sublinear")
        self.assertEqual(growth.klass(1.1), "linear")
        self.assertEqual(growth.klass(2.0), "superlinear")
        self.assertEqual(growth.klass(-0.5), "falling")
        self.assertEqual(growth.klass(None), "unmeasured")

    def test_missing_and_non_positive_values(self):
        self.assertEqual(growth.slopes([1, 10], [0.0, 5.0]), [None])
        self.assertIn("fewer than two", growth.describe([1, 10], [None, 5.0]))
        # A missing middle point is left out: one step from 1 to 100.
        self.assertIn("from 1 to 100", growth.describe([1, 10, 100], [1.0, None, 100.0]))

    def test_sentence_names_every_series(self):
        s = growth.sentence("RSS", [("A", [1, 10], [1.0, 10.0]), ("B", [1, 10], [5.0, 5.0])], "x")
        self.assertTrue(s.startswith("RSS: A grows linearly"), s)
        self.assertIn("; B stays flat", s)
        self.assertTrue(s.endswith("."))


class Links(unittest.TestCase):
    def test_slug_like_github(self):
        seen = {}
        self.assertEqual(goals.slug("W3: forward_backward of 1 M tokens, call → bytes on the wire", seen),
                         "w3-forward_backward-of-1-m-tokens-call--bytes-on-the-wire")
        self.assertEqual(goals.slug("C1: samples/s and CPU", seen), "c1-sampless-and-cpu")
        self.assertEqual(goals.slug("C1: samples/s and CPU", seen), "c1-sampless-and-cpu-1")

    def test_resolve_by_heading_level_and_prefix(self):
        text = ("| " + goals.ref("### W5: memory", "what would close it") + " | "
                + goals.ref("## W5: memory", "table") + " | " + goals.ref("## Nowhere", "profile") + " |\n"
                "## W5: memory with 10 futures\n### W5: memory with 10 futures in flight\n")
        out = goals.resolve(text)
        self.assertIn("[what would close it](#w5-memory-with-10-futures-in-flight)", out)
        self.assertIn("[table](#w5-memory-with-10-futures)", out)
        self.assertIn("profile: not in this run", out)


if __name__ == "__main__":
    unittest.main()
