"""Count the words of the files named on the command line (the task example's program)."""

import sys


def count(text: str) -> int:
    return len(text.split())


if __name__ == "__main__":
    total = 0
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as fh:
            total += count(fh.read())
    print(f"{total} words")
