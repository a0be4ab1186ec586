"""Writes the sentiment sample's labelled data set (data.csv) from hand-written phrase lists and sentences, reproducibly."""

from __future__ import annotations

import argparse
import csv
import io
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HANDWRITTEN = HERE / "handwritten.csv"
DATA = HERE / "data.csv"
SEED = 20210614
N_GENERATED = 1200
TEST_FRACTION = 0.25
FIELDS = ("text", "label", "source", "split")

# Things people review; each comes with the verb tense that reads naturally.
SUBJECTS = [
    "the movie", "this film", "the plot", "the acting", "the soundtrack", "the ending",
    "the service", "the food", "this restaurant", "the waiter", "the dessert", "the coffee",
    "this hotel", "the room", "the staff", "the breakfast", "the view", "the bed",
    "this phone", "the battery", "the screen", "the camera", "this laptop", "the keyboard",
    "the book", "the story", "the author", "the translation", "this album", "the concert",
    "the delivery", "the packaging", "the app", "the update", "this game", "the price",
    "the driver", "the guide", "the course", "the teacher", "the nurse", "the receptionist",
    "this chair", "the blender", "the speaker", "the headphones", "the vacuum cleaner", "the charger",
    "the museum", "the tour", "the beach", "the pool", "the spa", "the show",
    "the repair", "the installation", "the menu", "the portions", "the wine", "the cake",
]

POSITIVE = [
    "was absolutely wonderful", "is great", "exceeded my expectations", "was a real delight",
    "is worth every penny", "made my day", "works perfectly", "was brilliant", "is fantastic",
    "was superb", "is really enjoyable", "felt fresh and exciting", "was excellent",
    "is simply amazing", "was lovely", "impressed me", "was outstanding", "is top notch",
    "was beautiful", "is a pleasure to use", "was friendly and helpful", "is perfect",
    "was better than I hoped", "is very good", "was charming", "delighted the whole family",
    "arrived early and in perfect shape", "works like a charm", "kept us entertained for hours",
    "was done quickly and properly", "made us feel welcome", "is built to last",
    "was cooked to perfection", "runs smoothly", "was a joy from start to finish", "saved me a lot of time",
    "is easy to set up", "was spotless", "was worth the wait", "put a smile on my face",
]

NEGATIVE = [
    "was terrible", "is a waste of money", "broke after two days", "was boring",
    "is awful", "disappointed me", "was painfully slow", "felt cheap", "was a complete mess",
    "never worked properly", "was horrible", "is useless", "was rude and careless",
    "is overpriced", "was dull", "annoyed me", "was the worst I have seen", "is broken",
    "was bland", "is a total letdown", "was poorly made", "is frustrating",
    "was worse than I feared", "is very bad", "was a disaster", "ruined the evening",
]

# Negation turns a phrase around; these pairs keep the label honest.
NEGATED_POSITIVE = [  # read negative
    "was not good", "was not worth it", "did not work at all", "was not enjoyable",
    "is not what I hoped for", "was not great", "did not impress me", "is not recommended",
]
NEGATED_NEGATIVE = [  # read positive
    "was not bad at all", "never disappointed me", "did not let me down", "is not overpriced",
    "was never boring", "had no problems at all", "is not a waste of money", "was not dull",
]

OPENERS = ["", "Honestly, ", "Overall, ", "I have to say ", "In my opinion ", "To be fair, ", "Frankly, ", "Well, "]
POSITIVE_CLOSERS = [
    "I would definitely recommend it.", "Five stars.", "I will be back.", "Highly recommended.",
    "Can't wait to try it again.", "Loved it.", "Great value.", "Would buy again.",
]
NEGATIVE_CLOSERS = [
    "I would not recommend it.", "One star.", "Never again.", "Avoid it.",
    "I want my money back.", "Hated it.", "Terrible value.", "Would not buy again.",
]
# Single adjectives widen the vocabulary far more per sentence than whole phrases do.
POSITIVE_ADJECTIVES = [
    "good", "great", "excellent", "delicious", "friendly", "clean", "comfortable", "fast",
    "reliable", "beautiful", "lovely", "amazing", "fun", "helpful", "perfect", "tasty",
    "brilliant", "pleasant", "impressive", "stunning", "solid", "cosy", "gripping", "moving",
    "quiet", "spotless", "fresh", "enjoyable", "wonderful", "superb", "polite", "generous",
    "tender", "crisp", "spacious", "punctual", "kind", "relaxing", "fascinating", "clever",
    "smooth", "sturdy", "informative", "attentive", "charming", "gorgeous", "moist", "juicy",
    "efficient", "affordable", "flawless", "memorable", "heartwarming", "professional", "cheerful", "elegant",
]
NEGATIVE_ADJECTIVES = [
    "bad", "awful", "terrible", "bland", "rude", "dirty", "uncomfortable", "slow",
    "unreliable", "ugly", "boring", "broken", "cold", "noisy", "cheap", "flimsy",
    "disappointing", "stale", "buggy", "overpriced", "late", "useless", "horrible", "dull",
    "soggy", "crowded", "damaged", "annoying", "confusing", "greasy", "faulty", "mediocre",
    "dry", "grainy", "cramped", "unprofessional", "dismissive", "stressful", "tedious", "silly",
    "loud", "wobbly", "pointless", "careless", "awkward", "shabby", "undercooked", "tasteless",
    "inefficient", "expensive", "sloppy", "forgettable", "depressing", "incompetent", "grumpy", "tacky",
]
ADVERBS = ["", "very ", "really ", "quite ", "incredibly ", "pretty ", "so ", "extremely "]
POSITIVE_VERBS = ["I loved", "We enjoyed", "I really liked", "My wife adored", "I was impressed by", "We were happy with", "I am glad I chose"]
NEGATIVE_VERBS = ["I hated", "We regret choosing", "I really disliked", "My wife could not stand", "I was disappointed by", "We were unhappy with", "I wish I had skipped"]
POSITIVE_EXCLAIM = ["What a great experience!", "Absolutely loved it!", "Such a pleasant surprise!", "Wonderful!"]
NEGATIVE_EXCLAIM = ["What a disappointment!", "Absolutely hated it!", "Such a waste of time!", "Dreadful!"]


def _capitalize(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def _generate_one(rng: random.Random, label: str) -> str:
    good, bad = (POSITIVE, NEGATIVE) if label == "positive" else (NEGATIVE, POSITIVE)
    turned = NEGATED_NEGATIVE if label == "positive" else NEGATED_POSITIVE
    closers = POSITIVE_CLOSERS if label == "positive" else NEGATIVE_CLOSERS
    exclaim = POSITIVE_EXCLAIM if label == "positive" else NEGATIVE_EXCLAIM
    adjectives = POSITIVE_ADJECTIVES if label == "positive" else NEGATIVE_ADJECTIVES
    verbs = POSITIVE_VERBS if label == "positive" else NEGATIVE_VERBS
    subject, other = rng.sample(SUBJECTS, 2)
    form = rng.randrange(10)
    if form == 0:
        text = f"{rng.choice(OPENERS)}{subject} {rng.choice(good)}."
    elif form == 1:
        text = f"{subject} {rng.choice(good)} and {other} {rng.choice(good)}."
    elif form == 2:
        text = f"{rng.choice(OPENERS)}{subject} {rng.choice(turned)}."
    elif form == 3:
        # The clause after "but" carries the verdict, as readers take it.
        text = f"{subject} {rng.choice(bad)}, but {other} {rng.choice(good)}."
    elif form == 4:
        text = f"{subject} {rng.choice(good)}. {rng.choice(closers)}"
    elif form == 5:
        text = f"{rng.choice(exclaim)} {subject} {rng.choice(good)}."
    elif form == 6:
        text = f"{subject} {rng.choice(turned)} and {other} {rng.choice(good)}."
    elif form == 7:
        text = f"{rng.choice(OPENERS)}{subject} was {rng.choice(ADVERBS)}{rng.choice(adjectives)}."
    elif form == 8:
        first, second = rng.sample(adjectives, 2)
        text = f"{subject} was {rng.choice(ADVERBS)}{first} and {other} was {second}."
    else:
        text = f"{rng.choice(verbs)} {subject}. {rng.choice(closers)}"
    return _capitalize(text.strip())


def generate(n: int = N_GENERATED, seed: int = SEED) -> list[dict[str, str]]:
    """Balanced, de-duplicated generated sentences (half positive, half negative)."""
    if n <= 0 or n % 2:
        raise ValueError(f"n must be a positive even number, got {n}")
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    for label in ("positive", "negative"):
        count = 0
        attempts = 0
        while count < n // 2:
            attempts += 1
            if attempts > n * 50:
                raise RuntimeError("phrase lists too small for the requested number of distinct sentences")
            text = _generate_one(rng, label)
            if text in seen:
                continue
            seen.add(text)
            rows.append({"text": text, "label": label, "source": "generated"})
            count += 1
    return rows


def read_handwritten(path: Path = HANDWRITTEN) -> list[dict[str, str]]:
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            if row.get("label") not in ("positive", "negative") or not (row.get("text") or "").strip():
                raise ValueError(f"{path}:{i}: need a non-empty text and a label of positive or negative, got {row}")
            rows.append({"text": row["text"].strip(), "label": row["label"], "source": "handwritten"})
    return rows


def split(rows: list[dict[str, str]], seed: int = SEED, test_fraction: float = TEST_FRACTION) -> list[dict[str, str]]:
    """Stratified train/test split per (source, label), so the test set holds hand-written sentences too."""
    rng = random.Random(seed + 1)
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault((row["source"], row["label"]), []).append(row)
    out = []
    for key in sorted(groups):
        group = groups[key]
        order = list(range(len(group)))
        rng.shuffle(order)
        n_test = round(len(group) * test_fraction)
        test_idx = set(order[:n_test])
        out.extend({**row, "split": "test" if i in test_idx else "train"} for i, row in enumerate(group))
    return out


def render(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def make_dataset() -> str:
    """The full data.csv content; the same bytes every run."""
    rows = generate() + read_handwritten()
    texts = [r["text"] for r in rows]
    if len(set(texts)) != len(texts):
        dupes = sorted({t for t in texts if texts.count(t) > 1})
        raise ValueError(f"duplicate sentences in the data set: {dupes}")
    return render(split(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(DATA), help=f"where to write the CSV (default {DATA})")
    args = parser.parse_args(argv)
    Path(args.out).write_text(make_dataset(), encoding="utf-8")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
