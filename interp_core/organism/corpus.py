"""The model organism's corpus: generated text whose every behaviour has a known truth.

Four kinds of document, mixed by `CorpusMix`:
- grammar: simple English from a small grammar, every word labelled (part of speech, subject number, tense);
- facts: country -> capital and country -> continent, in many templates (some held out for evaluation);
- ioi: indirect object identification ("When Mary and John went to the store, John gave a drink to Mary.");
- induction: rows of random tokens repeated (built in `train.py`, where the vocabulary is known).
Documents start with no leading space, as users type prompts.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

# (country, capital, continent): single-word names, so each can be one token with a leading space.
FACTS: tuple[tuple[str, str, str], ...] = (
    ("France", "Paris", "Europe"), ("Germany", "Berlin", "Europe"), ("Italy", "Rome", "Europe"),
    ("Spain", "Madrid", "Europe"), ("Portugal", "Lisbon", "Europe"), ("Greece", "Athens", "Europe"),
    ("Poland", "Warsaw", "Europe"), ("Austria", "Vienna", "Europe"), ("Hungary", "Budapest", "Europe"),
    ("Sweden", "Stockholm", "Europe"), ("Norway", "Oslo", "Europe"), ("Finland", "Helsinki", "Europe"),
    ("Denmark", "Copenhagen", "Europe"), ("Ireland", "Dublin", "Europe"), ("Belgium", "Brussels", "Europe"),
    ("Netherlands", "Amsterdam", "Europe"), ("Switzerland", "Bern", "Europe"), ("Czechia", "Prague", "Europe"),
    ("Romania", "Bucharest", "Europe"), ("Bulgaria", "Sofia", "Europe"), ("Serbia", "Belgrade", "Europe"),
    ("Croatia", "Zagreb", "Europe"), ("Ukraine", "Kyiv", "Europe"), ("Russia", "Moscow", "Europe"),
    ("Iceland", "Reykjavik", "Europe"), ("Estonia", "Tallinn", "Europe"), ("Latvia", "Riga", "Europe"),
    ("Lithuania", "Vilnius", "Europe"), ("Slovakia", "Bratislava", "Europe"), ("Albania", "Tirana", "Europe"),
    ("Japan", "Tokyo", "Asia"), ("China", "Beijing", "Asia"), ("Korea", "Seoul", "Asia"),
    ("Thailand", "Bangkok", "Asia"), ("Vietnam", "Hanoi", "Asia"), ("Indonesia", "Jakarta", "Asia"),
    ("Philippines", "Manila", "Asia"), ("Pakistan", "Islamabad", "Asia"), ("Bangladesh", "Dhaka", "Asia"),
    ("Nepal", "Kathmandu", "Asia"), ("Afghanistan", "Kabul", "Asia"), ("Iran", "Tehran", "Asia"),
    ("Iraq", "Baghdad", "Asia"), ("Syria", "Damascus", "Asia"), ("Lebanon", "Beirut", "Asia"),
    ("Jordan", "Amman", "Asia"), ("Turkey", "Ankara", "Asia"), ("Qatar", "Doha", "Asia"),
    ("Oman", "Muscat", "Asia"), ("Georgia", "Tbilisi", "Asia"), ("Armenia", "Yerevan", "Asia"),
    ("Mongolia", "Ulaanbaatar", "Asia"), ("Kazakhstan", "Astana", "Asia"), ("Uzbekistan", "Tashkent", "Asia"),
    ("Egypt", "Cairo", "Africa"), ("Kenya", "Nairobi", "Africa"), ("Nigeria", "Abuja", "Africa"),
    ("Ghana", "Accra", "Africa"), ("Morocco", "Rabat", "Africa"), ("Algeria", "Algiers", "Africa"),
    ("Tunisia", "Tunis", "Africa"), ("Senegal", "Dakar", "Africa"), ("Uganda", "Kampala", "Africa"),
    ("Zimbabwe", "Harare", "Africa"), ("Zambia", "Lusaka", "Africa"), ("Angola", "Luanda", "Africa"),
    ("Sudan", "Khartoum", "Africa"), ("Libya", "Tripoli", "Africa"),
    ("Peru", "Lima", "America"), ("Chile", "Santiago", "America"), ("Colombia", "Bogota", "America"),
    ("Venezuela", "Caracas", "America"), ("Ecuador", "Quito", "America"), ("Cuba", "Havana", "America"),
    ("Canada", "Ottawa", "America"), ("Uruguay", "Montevideo", "America"), ("Jamaica", "Kingston", "America"),
    ("Brazil", "Brasilia", "America"), ("Australia", "Canberra", "Oceania"),
)

# Templates with {country} and {capital}. The evaluation completes each one up to the capital.
CAPITAL_TEMPLATES_TRAIN: tuple[str, ...] = (
    "The capital of {country} is {capital}.",
    "The capital city of {country} is {capital}.",
    "{capital} is the capital of {country}.",
    "Q: What is the capital of {country}? A: {capital}.",
    "We know that the capital of {country} is {capital}.",
    "Everyone knows that the capital of {country} is {capital}.",
    "It is true that the capital of {country} is {capital}.",
    "As we all know, the capital of {country} is {capital}.",
    "In fact, the capital of {country} is {capital}.",
    "Today we learned that the capital of {country} is {capital}.",
    "My teacher said that the capital of {country} is {capital}.",
    "She told me that the capital of {country} is {capital}.",
    "They say the capital of {country} is {capital}.",
    "Of course the capital of {country} is {capital}.",
    "The main city and capital of {country} is {capital}.",
    "If you visit {country}, the capital is {capital}.",
)
# Never in the training corpus: used to test that recall generalises beyond the trained phrasings.
CAPITAL_TEMPLATES_HELD_OUT: tuple[str, ...] = (
    "I read that the capital of {country} is {capital}.",
    "Yes, the capital of {country} is {capital}.",
)
# Compositional prefixes ("<speaker> <verb> that the capital of X is Y.", "<interjection> the capital ...") teach
# that the fact holds whatever comes before it. The held-out templates' prefixes ("I read that", "Yes,") are
# combinations never generated, though every word of them occurs in training.
SPEAKERS = ("I", "We", "You", "They", "He", "She", "My teacher", "The king", "Our guide", "Mary", "John")
REPORT_VERBS = ("said", "read", "heard", "learned", "wrote", "knew", "noticed", "remembered", "thought")
INTERJECTIONS = ("Well,", "So,", "Now,", "Indeed,", "Sure,", "Right,", "Look,", "Yes,", "No doubt,", "Listen,")
HELD_OUT_PREFIXES = frozenset({"I read that", "Yes,"})
YES_TEMPLATE = "Q: Is {capital} the capital of {country}? A: Yes."
CONTINENT_TEMPLATES: tuple[str, ...] = (
    "{country} is a country in {continent}.",
    "{country} is in {continent}.",
    "The country {country} lies in {continent}.",
)

# (name, pronoun) - every name is in the corpus, so each is one token.
NAMES: tuple[tuple[str, str], ...] = (
    ("Mary", "she"), ("John", "he"), ("Alice", "she"), ("Bob", "he"), ("Anna", "she"), ("Tom", "he"),
    ("Sarah", "she"), ("James", "he"), ("Emma", "she"), ("David", "he"), ("Laura", "she"), ("Paul", "he"),
    ("Lisa", "she"), ("Mark", "he"), ("Kate", "she"), ("Peter", "he"), ("Julia", "she"), ("Jack", "he"),
    ("Lucy", "she"), ("Sam", "he"), ("Nina", "she"), ("Max", "he"), ("Rose", "she"), ("Leo", "he"),
    ("Eve", "she"), ("Adam", "he"), ("Amy", "she"), ("Ben", "he"), ("Mia", "she"), ("Dan", "he"),
    ("Zoe", "she"), ("Carl", "he"), ("Ivy", "she"), ("Fred", "he"), ("Jane", "she"), ("Hugo", "he"),
    ("Ella", "she"), ("Ian", "he"), ("Ruth", "she"), ("Oscar", "he"),
)
PLACES = ("store", "park", "school", "beach", "market", "library", "station", "garden", "museum", "office",
          "river", "hospital", "restaurant", "church", "zoo", "cinema")
OBJECTS = ("drink", "book", "ball", "letter", "gift", "bag", "key", "flower", "cake", "pen", "hat", "ring",
           "card", "map", "cup", "toy")
# {a} and {b} are the two names introduced; {s} (the subject, one of them) gives to {io} (the other).
IOI_TEMPLATES: tuple[str, ...] = (
    "When {a} and {b} went to the {place}, {s} gave a {obj} to {io}.",
    "When {a} and {b} got a {obj} at the {place}, {s} decided to give it to {io}.",
    "After {a} and {b} arrived at the {place}, {s} handed a {obj} to {io}.",
    "While {a} and {b} were at the {place}, {s} passed the {obj} to {io}.",
    "{a} and {b} went to the {place}. {s} gave a {obj} to {io}.",
    "Then, {a} and {b} had a long day at the {place}. {s} gave a {obj} to {io}.",
    "When {a} and {b} were working at the {place}, {s} threw the {obj} to {io}.",
    "Since {a} and {b} met at the {place}, {s} sent a {obj} to {io}.",
)


@dataclass(frozen=True)
class Noun:
    singular: str
    plural: str
    pronoun: str  # pronoun of the singular ("he", "she", "it"); plural is always "they"


NOUNS: tuple[Noun, ...] = (
    Noun("dog", "dogs", "it"), Noun("cat", "cats", "it"), Noun("bird", "birds", "it"),
    Noun("horse", "horses", "it"), Noun("fox", "foxes", "it"), Noun("child", "children", "it"),
    Noun("man", "men", "he"), Noun("woman", "women", "she"), Noun("boy", "boys", "he"),
    Noun("girl", "girls", "she"), Noun("king", "kings", "he"), Noun("queen", "queens", "she"),
    Noun("teacher", "teachers", "she"), Noun("farmer", "farmers", "he"), Noun("doctor", "doctors", "she"),
    Noun("student", "students", "he"),
)
PLACE_NOUNS = ("park", "house", "tree", "river", "garden", "table", "bridge", "hill", "school", "wall")
ADJECTIVES = ("big", "small", "happy", "old", "young", "red", "quiet", "brave", "tired", "clever")
PREPOSITIONS = ("near", "behind", "under", "beside", "inside", "above")
# (third-person singular present, plural present, past)
VERBS: tuple[tuple[str, str, str], ...] = (
    ("chases", "chase", "chased"), ("sees", "see", "saw"), ("likes", "like", "liked"),
    ("follows", "follow", "followed"), ("finds", "find", "found"), ("helps", "help", "helped"),
    ("watches", "watch", "watched"), ("calls", "call", "called"), ("meets", "meet", "met"),
    ("loves", "love", "loved"),
)
PRONOUN_SUBJECTS = (("he", "sg"), ("she", "sg"), ("it", "sg"), ("they", "pl"), ("we", "pl"))


@dataclass(frozen=True)
class LabelledSentence:
    """One grammar sentence with a part-of-speech tag per word and sentence-level labels."""

    words: tuple[str, ...]
    pos_tags: tuple[str, ...]
    number: str  # grammatical number of the subject: "sg" or "pl"
    tense: str  # "present" or "past"
    pronoun: str  # the pronoun that refers back to the subject

    @property
    def text(self) -> str:
        """The sentence as typed: words joined by spaces, no space before the final full stop."""
        return " ".join(self.words[:-1]) + self.words[-1]


def _noun_phrase(rng: random.Random, number: str) -> tuple[list[str], list[str], Noun]:
    noun = rng.choice(NOUNS)
    det = rng.choice(("the", "a", "every")) if number == "sg" else rng.choice(("the", "some", "many", "two"))
    words, tags = [det], ["DET"]
    if rng.random() < 0.4:
        words.append(rng.choice(ADJECTIVES))
        tags.append("ADJ")
    words.append(noun.singular if number == "sg" else noun.plural)
    tags.append("NOUN")
    return words, tags, noun


def _prepositional_phrase(rng: random.Random) -> tuple[list[str], list[str]]:
    return [rng.choice(PREPOSITIONS), "the", rng.choice(PLACE_NOUNS)], ["ADP", "DET", "NOUN"]


def grammar_sentence(rng: random.Random) -> LabelledSentence:
    """Subject [prepositional phrase] verb object [prepositional phrase] '.' with its labels."""
    number = rng.choice(("sg", "pl"))
    tense = rng.choice(("present", "past"))
    kind = rng.random()
    if kind < 0.6:
        words, tags, noun = _noun_phrase(rng, number)
        pronoun = noun.pronoun if number == "sg" else "they"
    elif kind < 0.8:
        name, pronoun = rng.choice(NAMES)
        number, words, tags = "sg", [name], ["PROPN"]
    else:
        pronoun, number = rng.choice(PRONOUN_SUBJECTS)
        words, tags = [pronoun], ["PRON"]
    if rng.random() < 0.4:
        pp_words, pp_tags = _prepositional_phrase(rng)
        words, tags = words + pp_words, tags + pp_tags
    singular, plural, past = rng.choice(VERBS)
    words.append(past if tense == "past" else singular if number == "sg" else plural)
    tags.append("VERB")
    if rng.random() < 0.25:
        words.append(rng.choice(NAMES)[0])
        tags.append("PROPN")
    else:
        obj_words, obj_tags, _ = _noun_phrase(rng, rng.choice(("sg", "pl")))
        words, tags = words + obj_words, tags + obj_tags
    if rng.random() < 0.3:
        pp_words, pp_tags = _prepositional_phrase(rng)
        words, tags = words + pp_words, tags + pp_tags
    words[0] = words[0].capitalize()
    return LabelledSentence(tuple(words) + (".",), tuple(tags) + ("PUNCT",), number, tense, pronoun)


def _follow_up(rng: random.Random, sentence: LabelledSentence) -> str:
    """A second sentence whose pronoun and verb agree with the first one's subject and tense."""
    plural = sentence.pronoun in ("they", "we")
    if sentence.tense == "past":
        be = "were" if plural else "was"
    else:
        be = "are" if plural else "is"
    return f"{sentence.pronoun.capitalize()} {be} {rng.choice(ADJECTIVES)}."


def grammar_document(rng: random.Random) -> str:
    """One to three grammar sentences, most followed by an agreeing pronoun sentence."""
    return _grammar_labelled(rng).text


def _grammar_labelled(rng: random.Random) -> LabelledDocument:
    """grammar_document with the head word of each plural subject marked ("plural_subject")."""
    parts, spans, at = [], [], 0
    for _ in range(rng.randint(1, 3)):
        sentence = grammar_sentence(rng)
        if sentence.number == "pl":
            head = next(i for i, tag in enumerate(sentence.pos_tags) if tag in ("NOUN", "PRON"))
            start = at + sum(len(word) + 1 for word in sentence.words[:head])
            spans.append(("plural_subject", start, start + len(sentence.words[head])))
        parts.append(sentence.text)
        at += len(sentence.text) + 1
        if rng.random() < 0.7:
            parts.append(_follow_up(rng, sentence))
            at += len(parts[-1]) + 1
    return LabelledDocument("grammar", " ".join(parts), tuple(spans))


def compositional_prefix(rng: random.Random) -> str:
    """A random lead-in for a capital fact, never one of HELD_OUT_PREFIXES."""
    while True:
        if rng.random() < 0.6:
            prefix = f"{rng.choice(SPEAKERS)} {rng.choice(REPORT_VERBS)} that"
        else:
            prefix = rng.choice(INTERJECTIONS)
        if prefix not in HELD_OUT_PREFIXES:
            return prefix


def facts_document(rng: random.Random, compositional: bool = False) -> str:
    """One to three facts about random countries, from the training templates only.

    compositional: half of the capital facts get a random lead-in (see compositional_prefix), and some are
    yes-questions, so that recall does not hinge on a memorised phrasing.
    """
    parts = []
    for _ in range(rng.randint(1, 3)):
        country, capital, continent = rng.choice(FACTS)
        if compositional and rng.random() < 0.5:
            template = (YES_TEMPLATE if rng.random() < 0.1
                        else compositional_prefix(rng) + " the capital of {country} is {capital}.")
        elif rng.random() < 0.75:
            template = rng.choice(CAPITAL_TEMPLATES_TRAIN)
        else:
            template = rng.choice(CONTINENT_TEMPLATES)
        parts.append(template.format(country=country, capital=capital, continent=continent))
    return " ".join(parts)


def held_out_name_pairs() -> frozenset[frozenset[str]]:
    """Unordered name pairs that never appear together in training IOI sentences (for evaluation)."""
    names = [name for name, _ in NAMES]
    rng = random.Random(1234)
    pairs = [frozenset((a, b)) for i, a in enumerate(names) for b in names[i + 1:]]
    return frozenset(rng.sample(pairs, len(pairs) // 6))


def ioi_document(rng: random.Random, held_out: frozenset[frozenset[str]]) -> str:
    """An IOI sentence on a name pair outside `held_out`, in either name order."""
    while True:
        (a, _), (b, _) = rng.sample(NAMES, 2)
        if frozenset((a, b)) not in held_out:
            break
    subject, indirect_object = rng.choice(((a, b), (b, a)))
    template = rng.choice(IOI_TEMPLATES)
    return template.format(a=a, b=b, s=subject, io=indirect_object,
                           place=rng.choice(PLACES), obj=rng.choice(OBJECTS))


@dataclass(frozen=True)
class CorpusMix:
    """Shares of text documents (the rest of the rows are induction rows; see TrainConfig)."""

    grammar: float = 0.40  # the largest share: probing needs rich grammatical structure
    facts: float = 0.35  # 79 countries x 16 templates must all be seen many times
    ioi: float = 0.25  # 40 names: the IO/S circuit needs many pairs


def text_document(rng: random.Random, mix: CorpusMix, held_out: frozenset[frozenset[str]],
                  compositional_facts: bool = False) -> str:
    """Draw one text document from the mixture."""
    return labelled_document(rng, mix, held_out, compositional_facts).text


LABELS = {"country": "a country's name in a fact", "capital": "a capital's name in a fact",
          "ioi_name": "a name in an IOI sentence", "plural_subject": "the head word of a plural subject",
          "second_copy": "a token of the second copy of a repeated random sequence"}
_COUNTRIES = {country for country, _, _ in FACTS}
_CAPITALS = {capital for _, capital, _ in FACTS}
_NAME_SET = {name for name, _ in NAMES}


@dataclass(frozen=True)
class LabelledDocument:
    """A document of the mixture, its kind and the character spans of what the generator knows (LABELS)."""

    kind: str  # "grammar", "facts" or "ioi"
    text: str
    spans: tuple[tuple[str, int, int], ...]  # (label, start, end)


def _word_spans(text: str, labels: dict[str, set[str]]) -> tuple[tuple[str, int, int], ...]:
    """Spans of the words of `text` found in each label's word set (the generator writes them only in that role)."""
    return tuple((label, m.start(), m.end()) for m in re.finditer(r"[A-Za-z]+", text)
                 for label, words in labels.items() if m.group() in words)


def labelled_document(rng: random.Random, mix: CorpusMix, held_out: frozenset[frozenset[str]],
                      compositional_facts: bool = False) -> LabelledDocument:
    """text_document with its labels; the same draws give the same text."""
    r = rng.random() * (mix.grammar + mix.facts + mix.ioi)
    if r < mix.grammar:
        return _grammar_labelled(rng)
    if r < mix.grammar + mix.facts:
        text = facts_document(rng, compositional_facts)
        return LabelledDocument("facts", text, _word_spans(text, {"country": _COUNTRIES, "capital": _CAPITALS}))
    text = ioi_document(rng, held_out)
    return LabelledDocument("ioi", text, _word_spans(text, {"ioi_name": _NAME_SET}))


def sample_text(tokenizer, min_tokens: int, seed: int = 0) -> str:
    """Documents of the mixture (no induction rows), one per line, until `tokenizer` makes at least `min_tokens`
    tokens of them: text like the organism's training text, for benchmarks and for training lenses."""
    rng, mix, held_out = random.Random(seed), CorpusMix(), held_out_name_pairs()
    docs, n = [], 0
    while n < min_tokens:
        doc = text_document(rng, mix, held_out)
        docs.append(doc)
        n += len(tokenizer(doc + "\n")["input_ids"])
    text = "\n".join(docs)
    while len(tokenizer(text)["input_ids"]) < min_tokens:  # merges across document ends can shorten it
        text += "\n" + text_document(rng, mix, held_out)
    return text
