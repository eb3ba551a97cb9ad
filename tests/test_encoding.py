"""Training encoding: every assistant turn of a conversation is in the loss, nothing else is; `text`
records are trained whole; one-exchange records encode exactly as before (encode_pair)."""

import json

import pytest

from tunelens.train.encoding import IGNORE_INDEX, Example, encode_examples, encode_record, mask_spans
from tunelens.errors import UserError
from tunelens.model.prompts import encode_pair, prompt_style
from tunelens.data.records import Pair, Turn, load_pairs
from tunelens.testing import tiny_tokenizer

SYSTEM = "Answer with Python code."
TURNS = [("human", "Write add(a, b)."), ("gpt", "def add(a, b):\n    return a + b\n"),
         ("human", "Now make it subtract."), ("gpt", "def sub(a, b):\n    return a - b\n"),
         ("human", "And multiply?"), ("gpt", "def mul(a, b):\n    return a * b\n")]


def _sharegpt_file(path, records=2):
    rows = []
    for r in range(records):
        conversation = [{"from": "system", "value": SYSTEM}]
        conversation += [{"from": who, "value": text + ("" if who == "human" else f"# {r}\n")} for who, text in TURNS]
        rows.append({"id": f"c{r}", "conversations": conversation})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _assistant_token_count(tok, pair):
    end = prompt_style(tok).end_of_turn
    return sum(len(tok(t.content + end, add_special_tokens=False)["input_ids"])
               for t in pair.turns if t.role == "assistant")


@pytest.mark.parametrize("chat_template", [False, True], ids=["gemma-turns", "chat-template"])
def test_multi_turn_sharegpt_trains_every_assistant_turn_by_token_count(tmp_path, chat_template):
    from tunelens.train.run import collate

    tok = tiny_tokenizer(chat_template=chat_template)
    pairs = load_pairs(_sharegpt_file(tmp_path / "chats.jsonl"))
    assert [len(p.turns) for p in pairs] == [6, 6] and pairs[0].system == SYSTEM
    data = encode_examples(tok, pairs, max_length=4096)
    input_ids, _, labels = collate(data.examples, tok.pad_token_id)
    for row, (pair, example) in enumerate(zip(pairs, data.examples)):
        trained = labels[row, 1:] != IGNORE_INDEX  # what the loss sees: position t predicts label t+1
        assert int(trained.sum()) == _assistant_token_count(tok, pair) == example.trained_tokens
        # the trained tokens are exactly the three answers, each with its end-of-turn text, in order
        pieces = [tok.decode(input_ids[row, s:e]) for s, e in example.trained_spans]
        end = prompt_style(tok).end_of_turn
        assert pieces == [t.content + end for t in pair.turns if t.role == "assistant"]
        # and the user turns and the system text are in the input, untrained
        context = tok.decode([t for t, lab in zip(input_ids[row].tolist(), labels[row].tolist()) if lab == IGNORE_INDEX])
        assert SYSTEM in context and all(t.content in context for t in pair.turns if t.role == "user")


def test_train_on_a_multi_turn_sharegpt_file_counts_every_assistant_token(tmp_path):
    from tunelens.testing import tiny_model
    from tunelens.train.config import TrainConfig
    from tunelens.train.run import train

    model, tok = tiny_model("gemma3")
    path = _sharegpt_file(tmp_path / "chats.jsonl")
    expected = sum(_assistant_token_count(tok, p) for p in load_pairs(path))
    config = TrainConfig(batch_size=2, max_steps=1, eval_split=0.0, checkpoint_every=0, lora_r=2)
    result = train(config, path, tmp_path / "adapter", model=model, tokenizer=tok)
    assert result.trained_tokens == expected


def test_one_exchange_encodes_exactly_like_encode_pair():
    for chat_template in (False, True):
        tok = tiny_tokenizer(chat_template=chat_template)
        pair = Pair("x", "Add two numbers.", "def add(a, b):\n    return a + b\n", 1, {}, system="Be brief.")
        ids, spans = encode_record(tok, pair)
        old_ids, prompt_len = encode_pair(tok, pair.instruction, pair.response, pair.system)
        assert (ids, spans) == (old_ids, [(prompt_len, len(old_ids))])


def test_text_records_train_every_token_after_bos(tmp_path):
    tok = tiny_tokenizer()
    path = tmp_path / "text.jsonl"
    path.write_text(json.dumps({"text": "import os\nprint(os.getcwd())\n"}) + "\n")
    [pair] = load_pairs(path)
    assert pair.kind == "text" and pair.turns == () and pair.instruction == ""
    [example] = encode_examples(tok, [pair], 512).examples
    body = tok("import os\nprint(os.getcwd())\n<eos>", add_special_tokens=False)["input_ids"]
    assert example.ids == (tok.bos_token_id, *body)
    assert example.trained_tokens == len(body) == len(example.ids) - 1
    assert example.labels() == [IGNORE_INDEX, *body]


def test_trl_conversational_prompt_completion_trains_only_the_completion(tmp_path):
    tok = tiny_tokenizer(chat_template=True)
    record = {"prompt": [{"role": "user", "content": "Add."}, {"role": "assistant", "content": "def add(a, b): ..."},
                         {"role": "user", "content": "Fill it in."}],
              "completion": [{"role": "assistant", "content": "def add(a, b):\n    return a + b\n"}]}
    path = tmp_path / "trl.jsonl"
    path.write_text(json.dumps(record) + "\n")
    [pair] = load_pairs(path)
    assert [t.trained for t in pair.turns] == [True, False, True, True]
    assert pair.assistant_texts == ["def add(a, b):\n    return a + b\n"]
    [example] = encode_examples(tok, [pair], 512).examples
    assert len(example.trained_spans) == 1
    assert tok.decode(example.ids[slice(*example.trained_spans[0])]) == "def add(a, b):\n    return a + b\n<|im_end|>\n"


def test_truncation_clips_the_spans_and_skips_records_with_no_trained_token():
    tok = tiny_tokenizer()
    pair = Pair("m", "q2", "a2", 1, {}, turns=(Turn("user", "q1"), Turn("assistant", "answer one"),
                                              Turn("user", "q2"), Turn("assistant", "a2")))
    ids, spans = encode_record(tok, pair)
    data = encode_examples(tok, [pair], max_length=spans[0][1] + 1)
    [example] = data.examples
    assert data.truncated == ("m",) and example.trained_spans == ((spans[0][0], spans[0][1]),)
    assert encode_examples(tok, [pair], max_length=spans[0][0]).skipped == ("m",)


def test_show_mask_view_has_one_trained_stretch_per_assistant_turn(tmp_path):
    tok = tiny_tokenizer()
    [pair, _] = load_pairs(_sharegpt_file(tmp_path / "chats.jsonl"))
    view = mask_spans(tok, pair)
    assert view.trained_turns == 3 and view.cut_tokens == 0
    assert [text for text, state in view.spans if state == "trained"] == \
        [t.content + "<end_of_turn>\n" for t in pair.turns if t.role == "assistant"]
    assert view.trained_tokens == _assistant_token_count(tok, pair)
    assert view.masked_tokens + view.trained_tokens == len(encode_record(tok, pair)[0])


def test_a_template_that_rewrites_earlier_turns_is_a_clear_error():
    tok = tiny_tokenizer(chat_template=True)
    # drops earlier assistant answers from the history, as some reasoning-model templates do
    tok.chat_template = ("{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}<|im_start|>"
                         "{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    pair = Pair("t", "q2", "a2", 7, {}, turns=(Turn("user", "q1"), Turn("assistant", "a1"),
                                              Turn("user", "q2"), Turn("assistant", "a2")))
    with pytest.raises(UserError, match=r"record t \(line 7\).*earlier turns differently"):
        encode_examples(tok, [pair], 512)


def test_example_from_prompt_len_alone_keeps_its_old_meaning():
    example = Example("a", 1, (11, 12, 13, 14, 15), 2)
    assert example.trained_spans == ((2, 5),) and example.trained_tokens == 3
    assert Example("b", 1, (1, 2, 3), 0, ((0, 3),)).trained_tokens == 2  # token 0 is never predicted
