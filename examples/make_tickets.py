"""Write examples/tickets.csv: an imbalanced set of English customer-support tickets, made here.

Four classes, long-tailed (billing 120, shipping 60, technical 30, account 12: ratio 10). Each ticket
is an opening, a complaint built from a class template and slot words, and sometimes a closing line,
drawn with a fixed seed, so the file is the same on every run:

    python examples/make_tickets.py
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

OPENINGS = ["Hello,", "Hi team,", "Good morning,", "Dear support,", "Hey,", ""]
CLOSINGS = ["Please help.", "Thanks in advance.", "Can you look into this?", "I would appreciate a quick reply.",
            "This is urgent for me.", ""]
TEMPLATES = {
    "billing": [
        "I was charged {amount} dollars twice for my {plan} subscription this month.",
        "My invoice {number} shows a fee I do not recognise.",
        "The refund for order {number} has still not reached my {card}.",
        "Why did my monthly bill go up to {amount} dollars without any notice?",
        "I cancelled my {plan} plan but you charged my {card} again.",
        "Please explain the extra charge of {amount} dollars on my last statement.",
        "The discount code was not applied and I paid the full price of {amount} dollars.",
        "I need a copy of invoice {number} for my accountant.",
    ],
    "shipping": [
        "My package with tracking number {number} has not moved for {days} days.",
        "The parcel arrived {damage} and the {item} inside is broken.",
        "I ordered a {item} {days} days ago and it still has not shipped.",
        "The courier left my {item} at the wrong address.",
        "Can I change the delivery address for order {number}?",
        "The {item} I received is not the one I ordered.",
    ],
    "technical": [
        "The app crashes every time I open the {screen} screen.",
        "I cannot upload photos since the latest update on my {device}.",
        "The website shows error {number} when I try to check out.",
        "Notifications stopped working on my {device} after I reinstalled the app.",
        "The {screen} page loads forever and then goes blank.",
    ],
    "account": [
        "I forgot my password and the reset email never arrives.",
        "Please delete my account and all of my personal data.",
        "Someone changed the email address on my account without my permission.",
        "I want to merge my two accounts into one.",
    ],
}
SLOTS = {
    "amount": ["12", "25", "49", "99", "120", "250"],
    "plan": ["premium", "family", "basic", "yearly", "student"],
    "number": ["4417", "88213", "10293", "55610", "70022", "31158", "90871"],
    "card": ["credit card", "bank account", "debit card", "PayPal account"],
    "days": ["three", "five", "seven", "ten", "twelve"],
    "damage": ["soaked", "crushed", "torn open", "badly dented"],
    "item": ["lamp", "blender", "jacket", "phone case", "coffee maker", "backpack", "desk chair"],
    "screen": ["settings", "profile", "checkout", "order history", "search"],
    "device": ["iPhone", "Android phone", "tablet", "laptop"],
}
COUNTS = {"billing": 120, "shipping": 60, "technical": 30, "account": 12}


def tickets(seed: int = 7) -> list[tuple[str, str]]:
    """(text, label) rows, unique texts, in a shuffled order."""
    rng = random.Random(seed)
    rows, seen = [], set()
    for label, count in COUNTS.items():
        while sum(1 for _, lab in rows if lab == label) < count:
            body = rng.choice(TEMPLATES[label])
            body = body.format(**{k: rng.choice(v) for k, v in SLOTS.items()})
            text = " ".join(part for part in (rng.choice(OPENINGS), body, rng.choice(CLOSINGS)) if part)
            if text not in seen:
                seen.add(text)
                rows.append((text, label))
    rng.shuffle(rows)
    return rows


def main() -> None:
    path = Path(__file__).with_name("tickets.csv")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(tickets())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
