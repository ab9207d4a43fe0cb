# ruff: noqa: E501  (the corpus texts are data, one string per turn)
"""Build benchmarks/tasks/data/fidelity_domains.jsonl, the per-domain fidelity corpus.

    python benchmarks/build_fidelity_domains.py > benchmarks/tasks/data/fidelity_domains.jsonl

One JSON line per conversation: {"domain", "id", "source", "messages"}. `edgeeval fidelity
--corpus domains` renders each conversation through the reference model's own chat template
(a full exchange: no generation prompt) and measures KLD per domain.

Sources (all offline):
- code, long_doc: the Python documentation topics that every CPython install carries
  (`pydoc_data.topics`, Python Software Foundation License Version 2; text of the Python 3.11
  docs). code: the indented example blocks of the topics, asked for and answered as code;
  long_doc: whole topics handed over to be summarised.
- chat, tool_calls, non_latin: written for edgeeval by its authors (the project's licence).
  The non-Latin texts (Chinese, Russian, Arabic, Hindi) are short original paragraphs on
  everyday subjects, written for this corpus, not translations of a published text.
"""

from __future__ import annotations

import json
import re
import sys

PYDOC = "Python 3.11 docs (pydoc_data.topics), PSF License v2"
OWN = "written for edgeeval (project licence)"

# --- code: example blocks of the Python docs ---

CODE_TOPICS = (
    "assignment", "for", "try", "with", "function", "class", "lambda", "formatstrings",
    "typesseq-mutable", "augassign", "comparisons", "string-methods", "specialnames",
    "exprlists", "slicings", "if",
)  # fmt: skip


def code_blocks(text: str) -> list[str]:
    """Indented blocks of at least three lines that hold Python (a `>>>` prompt, `def`,
    `class`, `for`, `import` or an assignment), dedented by three spaces."""
    blocks, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("   ") or (current and not line.strip()):
            current.append(line[3:])
            continue
        body = "\n".join(current).strip("\n")
        if body.count("\n") >= 2 and re.search(r">>>|\bdef |\bclass |\bfor |\bimport |\w = ", body):
            blocks.append(body)
        current = []
    return blocks


def code_samples(topics: dict[str, str]) -> list[dict]:
    out = []
    for key in CODE_TOPICS:
        blocks = code_blocks(topics[key])[:3]
        if not blocks:
            continue
        title = topics[key].splitlines()[0].strip()
        answer = "\n\n".join(f"```python\n{b}\n```" for b in blocks)
        messages = [
            {"role": "user", "content": f"Show me Python examples of: {title}."},
            {"role": "assistant", "content": f"Here are examples from the docs.\n\n{answer}"},
        ]
        out.append({"domain": "code", "id": f"code-{key}", "source": PYDOC, "messages": messages})
    return out


def long_samples(topics: dict[str, str]) -> list[dict]:
    out = []
    for key in ("assignment", "specialnames"):
        text = topics[key][:9000]
        title = text.splitlines()[0].strip()
        messages = [
            {"role": "user", "content": f"Summarise this document in two sentences.\n\n{text}"},
            {
                "role": "assistant",
                "content": f"The document, '{title}', explains the rules Python follows here "
                "and the exceptions to them. It gives the grammar first, then the behaviour "
                "of each form with examples.",
            },
        ]
        out.append(
            {"domain": "long_doc", "id": f"long-{key}", "source": PYDOC, "messages": messages}
        )
    return out


# --- chat: everyday multi-turn conversations ---

CHAT = [
    [
        (
            "user",
            "I have eggs, spinach, half an onion and some feta. What can I make for dinner that takes less than 30 minutes?",
        ),
        (
            "assistant",
            "A spinach and feta frittata fits well. Slice the onion thinly and soften it in a little oil for five minutes. Add the spinach and let it wilt. Beat six eggs with a pinch of salt and pepper, pour them over the vegetables, crumble the feta on top, and cook on low heat until the edges set. Finish it under the grill for two or three minutes until the top is golden. Serve it with bread or a simple salad.",
        ),
        ("user", "I don't have a grill. Can I finish it another way?"),
        (
            "assistant",
            "Yes. Cover the pan with a lid and keep the heat low; the steam will cook the top in about five to eight minutes. Or, once the bottom has set, slide the frittata onto a plate, turn the pan over it, and flip both together so the uncooked side goes down for a minute.",
        ),
    ],
    [
        (
            "user",
            "Can you help me write a polite email to my landlord? The heating has been broken for a week and I already called twice.",
        ),
        (
            "assistant",
            "Of course. Here is a draft:\n\nSubject: Heating still not working - repair needed\n\nDear Ms. Patel,\n\nI am writing about the heating in flat 4B, which has not worked since Monday the 3rd. I called your office on the 4th and on the 7th, and I was told a technician would come, but nobody has visited yet. With the nights getting colder, the flat is now around 14 degrees.\n\nCould you please let me know when the repair will be done? I am available any weekday after 4 pm, and I can arrange access at other times if needed.\n\nThank you for your help.\n\nKind regards,\nSam Okafor",
        ),
        ("user", "That's good, but make it a bit firmer. It's been too long."),
        (
            "assistant",
            "Here is a firmer version of the key paragraph:\n\nThe heating has now been out for seven days despite two phone calls. This is affecting my health and my ability to work from home. I need a firm date for the repair by Friday. If it cannot be fixed by then, please tell me what temporary heating you will provide in the meantime.",
        ),
    ],
    [
        ("user", "what's the difference between weather and climate? my kid asked and i blanked"),
        (
            "assistant",
            "A simple way to say it: weather is what you get today, climate is what you expect over many years. If it rains this afternoon, that's weather. If a town usually has hot, dry summers and mild, wet winters, that's its climate. Scientists describe climate by averaging the weather over about thirty years. A handy line for kids is: climate is your wardrobe, weather is what you wear today.",
        ),
        ("user", "love that. is a heatwave weather or climate then?"),
        (
            "assistant",
            "A single heatwave is weather. But if heatwaves become more frequent or hotter over decades, that change in the pattern is a change in climate.",
        ),
    ],
    [
        (
            "user",
            "I'm training for my first 10k. I can run 5k now in about 32 minutes. The race is in 8 weeks. Is that enough time?",
        ),
        (
            "assistant",
            "Eight weeks is a reasonable amount of time to go from 5k to 10k if you build up gradually. A common approach is three runs a week: one easy run, one run with some faster intervals, and one long run that grows by about one kilometre each week. Keep most of your running at a pace where you could still hold a conversation. Plan an easier week around week five so your body can recover, and do your longest run, around 9 or 10 km, about ten days before the race.",
        ),
        ("user", "My knees get a bit sore after the long runs. Should I worry?"),
        (
            "assistant",
            "Mild soreness that fades within a day is common when you add distance. Sharp pain, swelling, or pain that gets worse while running is a reason to stop and see a doctor or physiotherapist. It helps to check your shoes, to avoid increasing distance too fast, and to add simple strength work such as squats, lunges and calf raises twice a week.",
        ),
    ],
    [
        (
            "user",
            "Give me three ideas for a birthday present for my dad. He likes gardening and old films, budget around 50 euros.",
        ),
        (
            "assistant",
            "1. A good pair of pruning shears and leather gloves - practical, and gardeners wear them out.\n2. A box set of classic films from an era he loves, for example Hitchcock's films from the 1950s, with a bag of good popcorn.\n3. A subscription to a seed club that sends unusual vegetable or flower seeds every season, so the present keeps arriving.",
        ),
        ("user", "He already has too many tools. Something more personal?"),
        (
            "assistant",
            "Then consider a framed print of a poster from his favourite film, or a small notebook for a garden diary with a handwritten note on the first page about a memory you share from the garden. Personal gifts don't need to cost much.",
        ),
    ],
    [
        ("user", "Explain compound interest like I'm 15."),
        (
            "assistant",
            "Imagine you put 100 euros in a savings account that pays 10 percent a year. After one year you have 110. In the second year, you earn 10 percent on 110, not on the original 100, so you get 11 euros and end with 121. Each year the interest also earns interest. That is compound interest. Over a long time it grows surprisingly fast: at 10 percent, your money roughly doubles every seven years. It also works against you with debt, which is why credit card balances can grow quickly if you only pay the minimum.",
        ),
    ],
]

# --- tool calls: a system prompt with JSON tool schemas, a call, its result, the answer ---

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_flights",
            "description": "Search one-way flights",
            "parameters": {
                "type": "object",
                "properties": {
                    "origin": {"type": "string", "description": "IATA code"},
                    "destination": {"type": "string", "description": "IATA code"},
                    "date": {"type": "string", "format": "date"},
                    "max_price_eur": {"type": "number"},
                },
                "required": ["origin", "destination", "date"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "create_calendar_event",
            "description": "Add an event to the user's calendar",
            "parameters": {
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "start": {"type": "string", "format": "date-time"},
                    "duration_minutes": {"type": "integer"},
                    "attendees": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["title", "start"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run_sql",
            "description": "Run a read-only SQL query on the sales database",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    },
]

SYSTEM_TOOLS = (
    "You are a helpful assistant with access to the following tools. To call a tool, reply "
    "with a JSON object inside <tool_call></tool_call> tags: "
    '{"name": <function-name>, "arguments": <args-json-object>}.\n\n<tools>\n'
    + "\n".join(json.dumps(t) for t in TOOLS)
    + "\n</tools>"
)

TOOL_EXCHANGES = [
    (
        "What's the weather like in Lisbon right now? In celsius please.",
        {"name": "get_weather", "arguments": {"city": "Lisbon", "unit": "celsius"}},
        {
            "city": "Lisbon",
            "temperature": 18.5,
            "unit": "celsius",
            "condition": "partly cloudy",
            "humidity": 0.64,
            "wind_kmh": 14,
        },
        "It's 18.5 °C and partly cloudy in Lisbon, with 64 % humidity and a light wind of 14 km/h.",
    ),
    (
        "Find me a flight from Berlin to Madrid on 2025-03-14, under 120 euros.",
        {
            "name": "search_flights",
            "arguments": {
                "origin": "BER",
                "destination": "MAD",
                "date": "2025-03-14",
                "max_price_eur": 120,
            },
        },
        {
            "results": [
                {
                    "flight": "IB3675",
                    "depart": "2025-03-14T07:05",
                    "arrive": "2025-03-14T10:10",
                    "price_eur": 89.99,
                    "stops": 0,
                },
                {
                    "flight": "FR1432",
                    "depart": "2025-03-14T18:40",
                    "arrive": "2025-03-14T21:55",
                    "price_eur": 64.5,
                    "stops": 0,
                },
            ]
        },
        "I found two direct flights under 120 euros: FR1432 leaves at 18:40 and costs 64.50 €, and IB3675 leaves at 07:05 for 89.99 €. Shall I look at return flights too?",
    ),
    (
        "Put a 45 minute meeting called 'Budget review' in my calendar next Tuesday at 10, with ana@example.com and li.wei@example.com.",
        {
            "name": "create_calendar_event",
            "arguments": {
                "title": "Budget review",
                "start": "2025-03-18T10:00:00",
                "duration_minutes": 45,
                "attendees": ["ana@example.com", "li.wei@example.com"],
            },
        },
        {
            "status": "created",
            "event_id": "evt_8f3a21",
            "start": "2025-03-18T10:00:00+01:00",
            "end": "2025-03-18T10:45:00+01:00",
        },
        "Done: 'Budget review' is in your calendar on Tuesday 18 March from 10:00 to 10:45, and Ana and Li Wei are invited.",
    ),
    (
        "Which three products sold the most units last month?",
        {
            "name": "run_sql",
            "arguments": {
                "query": "SELECT product_name, SUM(quantity) AS units FROM sales WHERE sale_date >= date('now', 'start of month', '-1 month') AND sale_date < date('now', 'start of month') GROUP BY product_name ORDER BY units DESC LIMIT 3;"
            },
        },
        {
            "columns": ["product_name", "units"],
            "rows": [["USB-C cable 1m", 1842], ["Wireless mouse M2", 977], ["Laptop stand", 611]],
        },
        "Last month's top sellers were the USB-C cable 1m (1,842 units), the Wireless mouse M2 (977) and the Laptop stand (611).",
    ),
    (
        "Is it colder in Oslo or in Helsinki at the moment?",
        {"name": "get_weather", "arguments": {"city": "Oslo"}},
        {
            "city": "Oslo",
            "temperature": -3.0,
            "unit": "celsius",
            "condition": "snow",
            "humidity": 0.81,
            "wind_kmh": 9,
        },
        "Oslo is at -3 °C with light snow. Let me check Helsinki as well before I compare them.",
    ),
]


def tool_samples() -> list[dict]:
    out = []
    for i, (ask, call, result, answer) in enumerate(TOOL_EXCHANGES):
        messages = [
            {"role": "system", "content": SYSTEM_TOOLS},
            {"role": "user", "content": ask},
            {"role": "assistant", "content": f"<tool_call>\n{json.dumps(call)}\n</tool_call>"},
            {"role": "tool", "content": json.dumps(result)},
            {"role": "assistant", "content": answer},
        ]
        out.append({"domain": "tool_calls", "id": f"tool-{i}", "source": OWN, "messages": messages})
    return out


# --- non-Latin scripts: short original paragraphs ---

NON_LATIN = {
    "zh": [
        (
            "我想在周末去爬山，你有什么建议吗？",
            "周末爬山是放松身心的好方法。出发前先查看天气预报，避免在下雨或大风的时候上山。准备一双防滑的登山鞋、足够的饮用水和一些高能量的零食，比如坚果和香蕉。如果是第一次爬这条路线，最好和朋友一起去，并把行程告诉家人。上山时保持自己的节奏，不要一开始就走得太快；下山时膝盖承受的压力更大，可以使用登山杖。最后，记得把垃圾带下山，保护山里的环境。",
        ),
        (
            "怎样才能养成早起的习惯？",
            "养成早起的习惯关键在于循序渐进。每天比前一天早睡、早起十五分钟，让身体慢慢适应。睡前一个小时尽量不看手机，因为屏幕的光线会影响睡眠。把闹钟放在离床远一点的地方，这样你必须起床才能关掉它。早上起床后喝一杯温水，打开窗帘让阳光照进来，会让人更快清醒。周末也尽量保持相同的作息时间，否则周一又要重新调整。",
        ),
    ],
    "ru": [
        (
            "Как правильно заваривать зелёный чай?",
            "Зелёный чай не любит кипятка. Вскипятите воду и дайте ей остыть примерно до семидесяти–восьмидесяти градусов. На чашку объёмом двести миллилитров возьмите одну чайную ложку листьев. Заваривайте от одной до трёх минут: если держать дольше, чай станет горьким. Хороший листовой чай можно заваривать несколько раз, каждый раз немного увеличивая время. Храните чай в закрытой банке, вдали от света и сильных запахов.",
        ),
        (
            "Посоветуй, как подготовиться к собеседованию на работу.",
            "Сначала изучите компанию: чем она занимается, какие у неё продукты и ценности. Перечитайте описание вакансии и подумайте, какие примеры из вашего опыта показывают нужные навыки. Подготовьте короткий рассказ о себе на две минуты. Продумайте ответы на частые вопросы, например о ваших сильных и слабых сторонах, и обязательно задайте свои вопросы в конце разговора. Накануне выспитесь и проверьте дорогу или подключение к видеозвонку.",
        ),
    ],
    "ar": [
        (
            "ما هي فوائد القراءة اليومية؟",
            "القراءة اليومية تغذي العقل كما يغذي الطعام الجسم. فهي توسع المفردات وتحسن القدرة على التعبير والكتابة، وتساعد على التركيز لفترات أطول. كما أن قراءة القصص تجعلنا نفهم مشاعر الآخرين ووجهات نظرهم بشكل أفضل. ويكفي أن تبدأ بعشرين دقيقة كل يوم، قبل النوم مثلاً بدلاً من تصفح الهاتف. اختر كتباً تستمتع بها، ولا تتردد في ترك كتاب لا يعجبك والانتقال إلى غيره.",
        ),
        (
            "كيف أعتني بنبتة منزلية صغيرة؟",
            "ضع النبتة في مكان يصله ضوء الشمس غير المباشر، فمعظم النباتات المنزلية لا تحب الشمس الحارقة. اسقها عندما تجف الطبقة العليا من التربة، ولا تترك الماء متجمعاً في الصحن تحت الأصيص لأن ذلك يتلف الجذور. امسح الأوراق بقطعة قماش مبللة من حين لآخر لإزالة الغبار. وفي فصل الربيع يمكنك إضافة قليل من السماد ونقلها إلى أصيص أكبر إذا ضاق عليها.",
        ),
    ],
    "hi": [
        (
            "बारिश के मौसम में स्वस्थ कैसे रहें?",
            "बारिश के मौसम में साफ़ पानी पीना सबसे ज़रूरी है, इसलिए पानी उबालकर या फ़िल्टर करके पिएँ। बाहर का खुला खाना, ख़ासकर कटे हुए फल और चाट, खाने से बचें। घर के आसपास पानी जमा न होने दें, क्योंकि उसमें मच्छर पनपते हैं। भीगने के बाद जल्दी कपड़े बदलें और पैरों को सूखा रखें। अदरक और तुलसी वाली गरम चाय सर्दी-ज़ुकाम में आराम देती है।",
        ),
        (
            "बच्चों को पढ़ाई में मन लगाने के लिए क्या करें?",
            "बच्चों के लिए पढ़ाई का एक तय समय और शांत जगह बनाइए। बड़े काम को छोटे हिस्सों में बाँटिए और हर हिस्सा पूरा होने पर थोड़ा आराम दीजिए। उनकी रुचि की चीज़ों से पढ़ाई को जोड़िए, जैसे क्रिकेट के स्कोर से गणित सिखाना। अंकों से ज़्यादा उनकी मेहनत की तारीफ़ कीजिए। और सबसे ज़रूरी बात, ख़ुद भी उनके सामने किताब पढ़िए, क्योंकि बच्चे देखकर ज़्यादा सीखते हैं।",
        ),
    ],
}


def chat_samples() -> list[dict]:
    out = []
    for i, turns in enumerate(CHAT):
        messages = [{"role": role, "content": text} for role, text in turns]
        out.append({"domain": "chat", "id": f"chat-{i}", "source": OWN, "messages": messages})
    return out


def non_latin_samples() -> list[dict]:
    out = []
    for lang, pairs in NON_LATIN.items():
        for i, (ask, answer) in enumerate(pairs):
            messages = [{"role": "user", "content": ask}, {"role": "assistant", "content": answer}]
            out.append(
                {"domain": "non_latin", "id": f"{lang}-{i}", "source": OWN, "messages": messages}
            )
    return out


def main() -> int:
    from pydoc_data.topics import topics

    samples = (
        code_samples(topics)
        + chat_samples()
        + tool_samples()
        + non_latin_samples()
        + long_samples(topics)
    )
    for sample in samples:
        sys.stdout.write(json.dumps(sample, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
