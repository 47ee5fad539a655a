import unittest

from wordcount import count


class CountTest(unittest.TestCase):
    def test_words_are_separated_by_any_whitespace(self):
        self.assertEqual(count("one two\tthree\nfour  five"), 5)

    def test_nothing_has_no_words(self):
        self.assertEqual(count(" \n"), 0)


if __name__ == "__main__":
    unittest.main()
