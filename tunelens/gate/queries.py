"""Query sets: the built-in out-of-domain examples and a reader for query files."""

from __future__ import annotations

from pathlib import Path

from tunelens.errors import UserError
from tunelens.data.records import load_pairs

# Queries far from "write Python code": chit-chat, facts, other languages, writing tasks, and a few other
# programming languages. `--out-of-domain builtin` calibrates against these when no own set is at hand.
OUT_OF_DOMAIN_EXAMPLES = (
    # chit-chat and advice
    "Hi! How are you doing today?", "Tell me a joke about penguins.", "What should I cook for dinner tonight?",
    "Can you recommend a good science fiction novel?", "I feel tired all the time, any tips?",
    "What's a fun thing to do on a rainy Sunday?", "How do I get better at chess?",
    "Give me a motivational quote for Monday morning.", "What is your favourite colour?",
    "How can I improve my sleep schedule?", "Suggest a name for my new puppy.",
    "What are some good exercises for back pain?", "How do I politely decline a wedding invitation?",
    "Plan a three-day trip to Lisbon.", "What gift should I buy for my grandmother?",
    # facts and trivia
    "What is the capital of Australia?", "Who painted the Mona Lisa?", "How far is the Moon from the Earth?",
    "When did the Roman Empire fall?", "Why is the sky blue?", "How many bones are in the human body?",
    "What causes the seasons on Earth?", "Who wrote Pride and Prejudice?", "What is photosynthesis?",
    "Explain the rules of cricket.", "What is the tallest mountain in Africa?", "How do vaccines work?",
    "What is the population of Japan?", "Which planet has the most moons?", "What is inflation in economics?",
    "Summarise the plot of Hamlet.", "What were the causes of the First World War?",
    "How does a rainbow form?", "What is the boiling point of water at high altitude?",
    "Who was Ada Lovelace?",
    # other natural languages
    "Quelle est la capitale de l'Australie ?", "Raconte-moi une blague sur les chats.",
    "¿Cuál es la mejor época para visitar México?", "¿Cómo se prepara una paella valenciana?",
    "Wie wird das Wetter morgen in Berlin?", "Kannst du mir ein gutes Buch empfehlen?",
    "Qual é a receita de pão de queijo?", "Come si dice 'good morning' in giapponese?",
    "Wat is de hoofdstad van Nederland?", "Jak się masz dzisiaj?", "Сколько стоит билет до Москвы?",
    "东京今天天气怎么样？", "日本で一番高い山は何ですか？", "서울에서 가볼 만한 곳을 추천해 주세요.",
    "Ποια είναι η πρωτεύουσα της Ελλάδας;", "Bugün hava nasıl olacak?", "Hur lagar man köttbullar?",
    "Mikä on Suomen pääkaupunki?", "Apa kabar hari ini?", "ما هي عاصمة مصر؟",
    # writing and other non-code tasks
    "Write a haiku about autumn leaves.", "Draft a polite email asking my landlord to fix the heating.",
    "Write a short birthday message for a colleague.", "Compose a limerick about a cat who loves cheese.",
    "Write a cover letter for a barista position.", "Summarise this article in three bullet points.",
    "Translate 'where is the train station' into German.", "Write a product description for a wool scarf.",
    "Give me ten ideas for a fantasy novel title.", "Write a toast for my best friend's wedding.",
    "Proofread this sentence: their going too the store.", "Write a four-line poem about the sea.",
    "Create a weekly meal plan for a vegetarian.", "Write a complaint letter about a delayed flight.",
    "Describe a sunset to someone who cannot see.", "List the pros and cons of working from home.",
    "Make a packing list for a camping weekend.", "Explain the offside rule to a child.",
    "Write a tweet announcing our bakery's new croissant.", "Outline a ten-minute talk on climate change.",
    # maths by hand, health, money
    "What is 17 times 23?", "Solve for x: 3x + 7 = 22.", "What is the derivative of x squared?",
    "How much should I save for retirement each month?", "Is it better to rent or buy a house?",
    "How many calories are in an apple?", "What are the symptoms of the flu?",
    "How do I change a flat tyre?", "How often should I water a cactus?", "How do I remove a red wine stain?",
    # other programming languages and tools (near the domain, still not Python code generation)
    "Write a SQL query that lists customers who ordered nothing in 2023.",
    "How do I centre a div with CSS flexbox?", "Write a JavaScript function that debounces another function.",
    "What does 'git rebase --onto' do?", "Write a bash one-liner that counts lines in all .log files.",
    "Explain Rust's borrow checker in simple terms.", "How do I declare an array in Java?",
    "Write an Excel formula that sums column B when column A says 'paid'.",
    "What is the difference between TCP and UDP?", "How do I configure nginx as a reverse proxy?",
)


def read_queries(path: str | Path) -> list[str]:
    """Queries from a JSONL of training-pair records (their instructions) or a text file, one per line; the
    name `builtin` stands for OUT_OF_DOMAIN_EXAMPLES."""
    if str(path) == "builtin":
        return list(OUT_OF_DOMAIN_EXAMPLES)
    path = Path(path)
    if not path.is_file():
        raise UserError(f"query file not found: {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = path.suffix == ".jsonl" or (lines and lines[0].startswith("{"))
    queries = [p.instruction for p in load_pairs(path)] if records else lines
    if not queries:
        raise UserError(f"{path}: no queries in it")
    return queries
