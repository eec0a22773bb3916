#!/usr/bin/env python3
"""A reward function for SwiftRLHF's reward-function workers (standard library only).

Reads one JSON object per line on stdin -- {"prompt", "response", "prompt_id", "sample_id", ...the prompt
record's other fields} -- and writes {"reward": number} per line, flushed at once. The reward: how well a
story names what was asked for: 0.5 for naming the animal of the prompt, 0.5 for naming its place (the
whole 1.0 for the animal when no place is asked). A prompt that asks for no story gets 0. The prompt
record may carry "animal" and "place" fields; otherwise they are read from the prompt's words.
"""
import json
import re
import sys

ANIMALS = ["dog", "cat", "bird", "fox", "bear", "rabbit", "owl", "frog", "horse", "duck", "mouse", "goat"]
PLACES = ["forest", "river", "garden", "town", "hill", "farm", "lake", "meadow"]


def words(text):
    return re.findall(r"[a-z]+", text.lower())


def first(candidates, text_words):
    for word in text_words:
        if word in candidates:
            return word
    return None


def reward(record):
    prompt, response = record["prompt"], record["response"]
    asked = words(prompt)
    if "story" not in asked:
        return 0.0
    animal = record.get("animal") or first(ANIMALS, asked)
    place = record.get("place") or first(PLACES, asked)
    said = set(words(response))
    if animal is None:
        return 0.0
    if place is None:
        return 1.0 if animal in said else 0.0
    return 0.5 * (animal in said) + 0.5 * (place in said)


def main():
    for number, line in enumerate(sys.stdin, 1):
        try:
            record = json.loads(line)
            value = reward(record)
        except (ValueError, KeyError, TypeError) as error:
            # A bad request is an error the worker reports with this message, never a silent 0.
            print(f"reward.py: line {number}: {error}", file=sys.stderr)
            sys.exit(2)
        sys.stdout.write(json.dumps({"reward": value}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
