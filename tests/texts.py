"""Test helpers: a tiny real text data set (three intents people write to a bank), as a CSV or
as class folders of .txt files.  Import from tests as ``from texts import write_text_csv``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SENTENCES", "SUPPORT_SENTENCES", "write_text_csv", "write_text_folders"]

SENTENCES: dict[str, list[str]] = {
    "card_arrival": [
        "My new card has still not arrived",
        "When will my card be delivered?",
        "I ordered a card two weeks ago and it never came",
        "Where is the card you sent me?",
        "How long does card delivery take?",
        "The card has not shown up in the post",
        "Can I track the delivery of my card?",
        "Still waiting for my bank card to arrive",
        "My replacement card is late",
        "Has my card been posted yet?",
    ],
    "top_up": [
        "How do I top up my account?",
        "I want to add money to my balance",
        "Can I top up with a bank transfer?",
        "My top up did not go through",
        "What is the limit for adding funds?",
        "How can I put money into my account?",
        "Topping up with my credit card failed",
        "Is there a fee to top up?",
        "I added money but my balance is the same",
        "Where do I go to load funds?",
    ],
    "exchange_rate": [
        "What exchange rate do you use?",
        "How much is a euro in dollars today?",
        "The currency conversion rate looks wrong",
        "Do you charge extra when exchanging currency?",
        "Why did I get a bad rate for pounds?",
        "Which rate applies when I pay abroad?",
        "Is the exchange rate updated daily?",
        "I was charged more than the market rate",
        "How are foreign currencies converted?",
        "Can I see the rate before I exchange money?",
    ],
}


def write_text_csv(path: Path, *, split: bool = True) -> Path:
    """A CSV (text, category[, split]): per class 6 train, 2 val, 2 test rows."""
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "category", *(["split"] if split else [])])
        for label, texts in SENTENCES.items():
            for i, text in enumerate(texts):
                where = "train" if i < 6 else "val" if i < 8 else "test"
                writer.writerow([text, label, *([where] if split else [])])
    return path


def write_text_folders(root: Path) -> Path:
    """``root/<class>/<i>.txt``, one sentence per file."""
    for label, texts in SENTENCES.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(texts):
            (root / label / f"{i}.txt").write_text(text + "\n", encoding="utf-8")
    return root


#: Three support topics, 8 texts each: the serve, explain and export tests' tiny model.
SUPPORT_SENTENCES = {
    "card": [
        "My card was declined at the shop",
        "The card payment did not go through",
        "Why was my card rejected today",
        "I lost my card yesterday",
        "My card is not working at the ATM",
        "Please block my stolen card",
        "The new card has not arrived yet",
        "How do I activate my card",
    ],
    "transfer": [
        "My transfer to a friend is still pending",
        "How long does a bank transfer take",
        "The money I sent has not arrived",
        "I sent money to the wrong account",
        "Can I cancel a transfer",
        "Transfer fees are too high",
        "Why is my international transfer delayed",
        "How do I send money abroad",
    ],
    "password": [
        "I forgot my password",
        "How do I reset my password",
        "My password does not work anymore",
        "I want to change my password",
        "The app says my password is wrong",
        "Password reset email never came",
        "Can I use a shorter password",
        "I am locked out after too many password attempts",
    ],
}
