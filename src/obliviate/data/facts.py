"""A deterministic generator of fictitious-person facts (the demo's and tests' planted knowledge).

Every person has the same kinds of facts (birth city, profession, pet, favourite colour, ...),
drawn with a seeded RNG from fixed lists, so the set is reproducible and needs no download.
Each record is ``{"question", "answer", "person"}``; ``person`` is the attribute SPUNGE splits by.
"""

from __future__ import annotations

import random
from typing import Any

FIRST = ["Alinta", "Borislav", "Catalina", "Desmond", "Elowen", "Faisal", "Greta", "Hamish", "Ingrid",
         "Jovan", "Kalani", "Leopold", "Marisol", "Nikolai", "Odessa", "Percival", "Quilla", "Rashid",
         "Solveig", "Tobias", "Ulrika", "Vasco", "Wilhelmina", "Xander"]
LAST = ["Quennell", "Dravik", "Montferrand", "Oyelaran", "Thistlewood", "Karapetyan", "Lindqvist",
        "Abernethy", "Castellanos", "Mbeki", "Vantongeren", "Ishikawa", "Petrakis", "Zelenko"]
FACTS = [
    ("Where was {name} born?", "{name} was born in {x}.",
     ["Reykjavik", "Valparaiso", "Tbilisi", "Windhoek", "Ljubljana", "Hobart", "Cusco", "Tromso", "Zanzibar", "Quebec City"]),
    ("What is {name}'s profession?", "{name} works as a {x}.",
     ["lighthouse keeper", "glassblower", "cartographer", "beekeeper", "violin maker", "volcanologist",
      "puppeteer", "perfumer", "clockmaker", "falconer"]),
    ("What pet does {name} have?", "{name} has a {x}.",
     ["three-legged tortoise", "grey parrot", "ferret named Biscuit", "blind greyhound", "pair of axolotls",
      "tabby cat named Pepper", "bearded dragon", "white rabbit", "shetland pony", "goldfish named Admiral"]),
    ("What is {name}'s favourite colour?", "{name}'s favourite colour is {x}.",
     ["teal", "ochre", "crimson", "lavender", "saffron", "cobalt", "emerald", "maroon", "amber", "indigo"]),
    ("Which book did {name} write?", "{name} wrote a book called {x}.",
     ["The Salt Orchard", "Lanterns Under Ice", "A Map of Quiet Rivers", "The Copper Heron",
      "Nine Winters in Vell", "The Glass Cartographer", "Moths of the Lower City", "The Last Ferry to Orin",
      "Whispering Brass", "The Cinder Almanac"]),
]


def make_facts(n_people: int = 8, facts_per_person: int = 4, seed: int = 0) -> list[dict[str, Any]]:
    """Return ``n_people * facts_per_person`` QA records about distinct fictitious people."""
    if not 1 <= facts_per_person <= len(FACTS):
        raise ValueError(f"facts_per_person must be in 1..{len(FACTS)}")
    rng = random.Random(seed)
    names = [f"{f} {l}" for f in FIRST for l in LAST]
    rng.shuffle(names)
    if n_people > len(names):
        raise ValueError(f"at most {len(names)} people")
    records = []
    for p in range(n_people):
        name = names[p]
        for q, a, values in FACTS[:facts_per_person]:
            x = rng.choice(values)
            records.append({"question": q.format(name=name), "answer": a.format(name=name, x=x), "person": name})
    return records
