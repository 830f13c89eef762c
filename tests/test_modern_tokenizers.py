"""Tests for ch05_pretraining/modern_tokenizers.py against the `tokenizers` library and tiktoken (offline).

Each tokenizer here is trained in the test by `tokenizers` itself, with the settings of Qwen2/Qwen3 (NFC,
Split(QWEN2_PATTERN) + ByteLevel), of Llama 3 (Split(LLAMA3_PATTERN), ignore_merges) or of GPT-2 (ByteLevel
with its own regex), saved as tokenizer.json, and loaded back with load_tokenizer_json: the course BPE must
give the ids that `tokenizers` gives. The tiktoken-format files are written from GPT-2's ranks and from a
trained Llama 3-style tokenizer. Chat templates are checked against sequences written out by hand and
against `tokenizers`' encoding of the rendered template text.
"""
import base64
import json
import random
import unicodedata
from pathlib import Path

import pytest
import regex

from ch02_text_data.bpe import GPT2_PATTERN, BPETokenizer, bytes_to_unicode
from ch02_text_data.download import GPT2_ENCODER_SHA256, GPT2_ENCODER_URL, GPT2_VOCAB_BPE_SHA256, GPT2_VOCAB_BPE_URL
from ch05_pretraining.modern_tokenizers import (
    CHAT_FORMATS,
    LLAMA3_PATTERN,
    QWEN2_PATTERN,
    ModernBPETokenizer,
    bpe_from_tiktoken_file,
    llama3_chat_ids,
    llama3_special_tokens,
    load_modern_tokenizer,
    load_tiktoken_file,
    load_tokenizer_json,
    qwen3_chat_ids,
    split_isolated,
    stop_token_ids,
)

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402

CORPUS = (
    "The quick brown fox jumps over the lazy dog. It's 12345 o'clock; WE'LL see you on 2024-06-01.\n"
    "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # recursion\n\n"
    "Café, naïve, Ångström, façade, résumé. 東京は日本の首都です。北京欢迎你！ 😀🎉👍🏽 ñandú\r\n"
    "   indented    text\twith\ttabs   \n\n\n" "x = [1, 2, 3]; y = {'a': 10, 'b': 200}  \n"
) * 20

TRICKY_TEXTS = [
    "Hello, world! It's 12345 o'clock.",
    "1234567890 and 3.14159 and 1,000,000",
    "cafe\u0301 e\u0301 é naïve nai\u0308ve Ångström A\u030angström",  # combining marks: NFC composes them
    "line one\r\nline two\r\n\r\n",
    "trailing spaces   ",
    "   leading spaces and\ttabs\t\t",
    "\n\n\n",
    " ",
    "",
    "東京は日本の首都です。北京欢迎你！",
    "emoji 😀🎉 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈",
    "def f(x):\n    return x**2  # square\n",
    "IT'S we'LL they'RE I'd YOU'VE don’t",
    "nbsp\u00a0and ideographic\u3000space",
    "<think>reasoning</think>answer",  # non-special added tokens in ordinary text
    "<thinking> <think <|im_end",  # near misses stay text
]

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "<|eom_id|>"]


def train_tokenizer(pattern: str | None, nfc: bool, specials: list[str], vocab_size: int = 500) -> Tokenizer:
    """A small byte-level BPE trained by `tokenizers`; pattern None: GPT-2's ByteLevel(use_regex=True)."""
    tok = Tokenizer(models.BPE())
    if nfc:
        tok.normalizer = normalizers.NFC()
    if pattern is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([CORPUS], trainer)
    return tok


def edit_json(src: Path, dst: Path, edit) -> Path:
    """Copy a tokenizer.json with edit(spec) applied."""
    spec = json.loads(src.read_text(encoding="utf-8"))
    edit(spec)
    dst.write_text(json.dumps(spec), encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def qwen_json(tmp_path_factory) -> Path:
    """Qwen2/Qwen3 settings: NFC, Split(QWEN2_PATTERN) + ByteLevel, ChatML specials, <think> not special."""
    tok = train_tokenizer(QWEN2_PATTERN, nfc=True, specials=QWEN_SPECIALS)
    tok.add_tokens([AddedToken("<think>", special=False, normalized=False),
                    AddedToken("</think>", special=False, normalized=False)])
    path = tmp_path_factory.mktemp("qwen") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def llama_json(tmp_path_factory) -> Path:
    """Llama 3 settings: no normaliser, Split(LLAMA3_PATTERN) + ByteLevel, ignore_merges, Llama specials."""
    tok = train_tokenizer(LLAMA3_PATTERN, nfc=False, specials=LLAMA_SPECIALS)
    folder = tmp_path_factory.mktemp("llama")
    tok.save(str(folder / "trained.json"))

    def as_llama(spec):
        spec["model"]["ignore_merges"] = True  # as in Llama 3's tokenizer.json
    return edit_json(folder / "trained.json", folder / "tokenizer.json", as_llama)


def references(path: Path) -> tuple[Tokenizer, ModernBPETokenizer]:
    """`tokenizers`' own reading of a tokenizer.json, and the course's."""
    return Tokenizer.from_file(str(path)), load_tokenizer_json(path)


def check_same_ids(path: Path, texts: list[str], normalize: bool) -> None:
    """The course tokenizer gives `tokenizers`' ids for every text, and decodes them back to the text."""
    hf, ours = references(path)
    assert ours.vocab_size == hf.get_vocab_size()
    for text in texts:
        expected = hf.encode(text, add_special_tokens=False).ids
        assert ours.encode_ordinary(text) == expected, text
        assert ours.decode(expected) == (unicodedata.normalize("NFC", text) if normalize else text)


# --- tokenizer.json --------------------------------------------------------------------------------------


def test_patterns_are_the_published_ones_and_differ_in_digits():
    assert split_isolated(regex.compile(QWEN2_PATTERN), "x 12345") == ["x", " ", *"12345"]
    assert split_isolated(regex.compile(LLAMA3_PATTERN), "x 12345") == ["x", " ", "123", "45"]
    assert QWEN2_PATTERN.replace(r"\p{N}|", r"\p{N}{1,3}|") == LLAMA3_PATTERN
    # one leading non-letter joins a word, line breaks stay apart, contractions in any case
    assert split_isolated(regex.compile(LLAMA3_PATTERN), "(hello) IT'S\n\nok ") == [
        "(hello", ")", " IT", "'S", "\n\n", "ok", " "]


def test_split_isolated_keeps_the_gaps_between_matches():
    assert split_isolated(regex.compile(r"\d+"), "ab12cd3") == ["ab", "12", "cd", "3"]
    assert split_isolated(regex.compile(r"\d+"), "") == []


@pytest.mark.parametrize("pattern", [QWEN2_PATTERN, LLAMA3_PATTERN])
def test_pre_tokenizer_pieces_match_tokenizers(pattern):
    split = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    for text in TRICKY_TEXTS:
        expected = [text[start:end] for _, (start, end) in split.pre_tokenize_str(text)]
        assert split_isolated(regex.compile(pattern), text) == expected, text


def test_qwen_style_tokenizer_json_gives_tokenizers_ids(qwen_json):
    check_same_ids(qwen_json, TRICKY_TEXTS, normalize=True)
    hf, ours = references(qwen_json)
    assert ours.encode_ordinary("cafe\u0301") == ours.encode_ordinary("café")  # NFC first
    n_trained = hf.get_vocab_size() - 2  # <think> and </think> come after the trained tokens
    assert ours.added_tokens == {"<think>": n_trained, "</think>": n_trained + 1}  # not special: matched in any text
    assert ours.special_tokens == {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    assert not ours.ignore_merges


def test_llama_style_tokenizer_json_gives_tokenizers_ids(llama_json):
    check_same_ids(llama_json, TRICKY_TEXTS, normalize=False)
    ours = load_tokenizer_json(llama_json)
    assert ours.encode_ordinary("cafe\u0301") != ours.encode_ordinary("café")  # no normaliser
    assert ours.ignore_merges and ours.pattern.pattern == LLAMA3_PATTERN


def test_gpt2_style_byte_level_pre_tokenizer(tmp_path):
    path = tmp_path / "tokenizer.json"
    train_tokenizer(None, nfc=False, specials=["<|endoftext|>"]).save(str(path))
    check_same_ids(path, TRICKY_TEXTS, normalize=False)
    assert load_tokenizer_json(path).pattern.pattern == GPT2_PATTERN


def test_merges_as_strings_load_like_merges_as_lists(qwen_json, tmp_path):
    def as_strings(spec):  # "a b", as older files (and tokenizers before 0.20) write them
        spec["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]

    def as_lists(spec):  # [a, b], as tokenizers 0.20+ writes them
        spec["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in spec["model"]["merges"]]
    strings = edit_json(qwen_json, tmp_path / "strings.json", as_strings)
    lists = edit_json(qwen_json, tmp_path / "lists.json", as_lists)
    check_same_ids(strings, TRICKY_TEXTS, normalize=True)
    check_same_ids(lists, TRICKY_TEXTS, normalize=True)
    assert load_tokenizer_json(strings).merges == load_tokenizer_json(lists).merges


@pytest.mark.parametrize("ignore_merges", [False, True])
def test_ignore_merges_takes_a_whole_piece_from_the_vocabulary(llama_json, tmp_path, ignore_merges):
    def add_unreachable_token(spec):  # "Ġzebra" in the vocabulary, but no merge leads to it
        spec["model"]["vocab"]["Ġzebra"] = 700
        spec["model"]["ignore_merges"] = ignore_merges
    path = edit_json(llama_json, tmp_path / "tokenizer.json", add_unreachable_token)
    hf, ours = references(path)
    for text in ["a zebra", " zebra", "zebras"]:
        assert ours.encode_ordinary(text) == hf.encode(text, add_special_tokens=False).ids, text
    assert (700 in ours.encode_ordinary("a zebra")) == ignore_merges


def test_random_texts_match_tokenizers(qwen_json):
    hf, ours = references(qwen_json)
    rng = random.Random(0)
    pieces = [*"aZ09 '.,!-_<>", "  ", "\n", "\t", "\r\n", "'s", "'LL", "e\u0301", "123456", "<think>", "ſ", "İ",
              "\u00a0", "\u3000", "\x1c", "\x85"]
    compared = 0
    for _ in range(400):
        chars = []
        for _ in range(rng.randrange(30)):
            while unicodedata.category(ch := chr(rng.randrange(0x110000))) in ("Cn", "Cs"):
                pass
            chars.append(rng.choice(pieces) if rng.random() < 0.6 else ch)
        text = "".join(chars)
        if hf.normalizer.normalize_str(text) != unicodedata.normalize("NFC", text):
            continue  # the two Unicode databases differ (e.g. U+0898 is new in Unicode 14): not a tokenizer bug
        assert ours.encode_ordinary(text) == hf.encode(text, add_special_tokens=False).ids, ascii(text)
        compared += 1
    assert compared > 350


def test_special_tokens_follow_tiktoken_rules(qwen_json):
    hf, ours = references(qwen_json)
    text = "hi<|im_end|>there<think>"
    assert ours.encode(text, allowed_special="all") == hf.encode(text, add_special_tokens=False).ids
    assert 2 not in ours.encode_ordinary(text)  # typed "<|im_end|>" stays text...
    assert ours.added_tokens["<think>"] in ours.encode_ordinary(text)  # ...while the non-special "<think>" is its token, as in tokenizers
    with pytest.raises(ValueError, match="special token '<\\|im_end\\|>'"):
        ours.encode(text)
    assert ours.decode(ours.encode(text, allowed_special="all")) == text
    with pytest.raises(ValueError, match="GPT-2's format"):
        ours.save(qwen_json.parent / "gpt2-files")


def test_load_modern_tokenizer_reads_the_folder(qwen_json, tmp_path):
    assert load_modern_tokenizer(qwen_json.parent).encode_ordinary("Hi 42") == load_tokenizer_json(qwen_json).encode_ordinary("Hi 42")
    with pytest.raises(FileNotFoundError, match="has no tokenizer.json"):
        load_modern_tokenizer(tmp_path)
    (tmp_path / "original").mkdir()
    (tmp_path / "original" / "tokenizer.model").write_text("")
    with pytest.raises(FileNotFoundError, match="bpe_from_tiktoken_file"):
        load_modern_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="no model folder"):
        load_modern_tokenizer(tmp_path / "absent")


def test_missing_or_broken_tokenizer_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_tokenizer_json(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        load_tokenizer_json(tmp_path / "broken.json")


@pytest.mark.parametrize("edit, field", [
    (lambda s: s["model"].update(type="WordPiece"), "model.type 'WordPiece'"),
    (lambda s: s.update(normalizer={"type": "NFKC"}), "normalizer 'NFKC'"),
    (lambda s: s.update(normalizer={"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}]}),
     "normalizer 'Sequence'"),
    (lambda s: s["model"].update(byte_fallback=True), "model.byte_fallback True"),
    (lambda s: s["model"].update(continuing_subword_prefix="##"), "model.continuing_subword_prefix '##'"),
    (lambda s: s.update(pre_tokenizer={"type": "Metaspace"}), "pre_tokenizer 'Metaspace'"),
    (lambda s: s["pre_tokenizer"]["pretokenizers"][1].update(use_regex=True), "use_regex True"),
    (lambda s: s["pre_tokenizer"]["pretokenizers"][1].update(add_prefix_space=True), "add_prefix_space True"),
    (lambda s: s["pre_tokenizer"]["pretokenizers"][0].update(behavior="Removed"), "behavior 'Removed"),
    (lambda s: s.update(decoder={"type": "Metaspace"}), "decoder 'Metaspace'"),
    (lambda s: s["added_tokens"][0].update(lstrip=True), "lstrip True"),
    (lambda s: s["added_tokens"][3].update(normalized=True), "'<think>' normalized True"),
])
def test_unsupported_fields_are_named(qwen_json, tmp_path, edit, field):
    path = edit_json(qwen_json, tmp_path / "odd.json", edit)
    with pytest.raises(ValueError, match=regex.escape(field)) as err:
        load_tokenizer_json(path)
    assert "odd.json: unsupported " in str(err.value)


def test_vocabulary_problems_are_named(qwen_json, tmp_path):
    def drop_a_byte(spec):
        del spec["model"]["vocab"]["Ā"]
    with pytest.raises(ValueError, match="lacks 1 of the 256 byte tokens"):
        load_tokenizer_json(edit_json(qwen_json, tmp_path / "a.json", drop_a_byte))

    def bad_merge(spec):
        spec["model"]["merges"].append("a b c")
    with pytest.raises(ValueError, match=r"model.merges\[\d+\] must be"):
        load_tokenizer_json(edit_json(qwen_json, tmp_path / "b.json", bad_merge))


# --- tiktoken files --------------------------------------------------------------------------------------


def write_tiktoken_file(path: Path, ranks: dict[bytes, int]) -> Path:
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items()), encoding="ascii")
    return path


@pytest.fixture(scope="module")
def gpt2_bpe(fetch_or_skip) -> BPETokenizer:
    """Chapter 2's BPE with GPT-2's published merges (from the mirror)."""
    return BPETokenizer.from_gpt2_files(fetch_or_skip(GPT2_ENCODER_URL, GPT2_ENCODER_SHA256),
                                        fetch_or_skip(GPT2_VOCAB_BPE_URL, GPT2_VOCAB_BPE_SHA256))


def test_gpt2_ranks_through_a_tiktoken_file(gpt2_bpe, gpt2_tokenizer, tmp_path):
    ranks = {gpt2_bpe.id_to_bytes[i]: i for i in gpt2_bpe.encoder.values()}
    path = write_tiktoken_file(tmp_path / "gpt2.tiktoken", ranks)
    encoding = load_tiktoken_file(path, GPT2_PATTERN, special_tokens=["<|endoftext|>"])
    ours = bpe_from_tiktoken_file(path, GPT2_PATTERN, special_tokens=["<|endoftext|>"])
    assert ours.merges == gpt2_bpe.merges  # the 50,000 published merges, recovered from ranks alone
    assert ours.special_tokens == {"<|endoftext|>": 50256} and encoding.n_vocab == 50257
    for text in [*TRICKY_TEXTS, "a <|endoftext|> b"]:
        expected = gpt2_tokenizer.encode(text, allowed_special="all")
        assert encoding.encode(text, allowed_special="all") == expected, text
        assert ours.encode(text, allowed_special="all") == expected, text


def test_llama_style_ranks_through_a_tiktoken_file(tmp_path):
    hf = train_tokenizer(LLAMA3_PATTERN, nfc=False, specials=[])  # ids: 256 bytes, then one per merge
    byte_decoder = {ch: b for b, ch in bytes_to_unicode().items()}
    ranks = {bytes(byte_decoder[ch] for ch in token): i for token, i in hf.get_vocab().items()}
    path = write_tiktoken_file(tmp_path / "tokenizer.model", ranks)
    encoding = load_tiktoken_file(path)  # LLAMA3_PATTERN and Llama 3's special names by default
    ours = bpe_from_tiktoken_file(path)
    n = len(ranks)
    assert encoding.encode("<|eot_id|>", allowed_special="all") == [n + 9]  # numbered after the last rank
    assert ours.special_tokens == {name: i - 128_000 + n for name, i in llama3_special_tokens().items()}
    for text in TRICKY_TEXTS:
        expected = hf.encode(text, add_special_tokens=False).ids
        assert encoding.encode_ordinary(text) == expected, text
        assert ours.encode_ordinary(text) == expected, text


def test_llama3_special_tokens_published_layout():
    specials = llama3_special_tokens()
    assert sorted(specials.values()) == list(range(128_000, 128_256))
    assert {name: specials[name] for name in [
        "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
        "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", "<|reserved_special_token_3|>",
        "<|reserved_special_token_247|>"]} == {
        "<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|reserved_special_token_0|>": 128002,
        "<|reserved_special_token_1|>": 128003, "<|finetune_right_pad_id|>": 128004,
        "<|reserved_special_token_2|>": 128005, "<|start_header_id|>": 128006, "<|end_header_id|>": 128007,
        "<|eom_id|>": 128008, "<|eot_id|>": 128009, "<|python_tag|>": 128010,
        "<|reserved_special_token_3|>": 128011, "<|reserved_special_token_247|>": 128255}


def test_a_128000_rank_file_gets_llama3_special_ids(tmp_path):
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({f"t{i}".encode(): 256 + i for i in range(128_000 - 256)})
    encoding = load_tiktoken_file(write_tiktoken_file(tmp_path / "tokenizer.model", ranks))
    assert encoding.n_vocab == 128_256
    assert encoding.encode("<|begin_of_text|>x<|eot_id|>", allowed_special="all") == [128000, ord("x"), 128009]
    explicit = load_tiktoken_file(tmp_path / "tokenizer.model", special_tokens={"<|end|>": 130000})
    assert explicit.encode("<|end|>", allowed_special="all") == [130000]


def test_tiktoken_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        load_tiktoken_file(tmp_path / "tokenizer.model")
    (tmp_path / "bad.model").write_text("YQ== 0\nnot-base64! 1\n")
    with pytest.raises(ValueError, match="bad.model, line 2"):
        load_tiktoken_file(tmp_path / "bad.model")
    (tmp_path / "twice.model").write_text("YQ== 0\nYQ== 1\n")
    with pytest.raises(ValueError, match="line 2: the token b'a' appears twice"):
        bpe_from_tiktoken_file(tmp_path / "twice.model")
    ranks = {bytes([b]): b for b in range(256)}
    with pytest.raises(ValueError, match="are ranks of ordinary tokens"):
        load_tiktoken_file(write_tiktoken_file(tmp_path / "clash.model", ranks), special_tokens={"<|x|>": 5})


def test_ranks_that_are_not_merges_are_refused(tmp_path):
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({b"abc": 256, b"ab": 257})  # "abc" ranks before "ab": no single merge makes it
    path = write_tiktoken_file(tmp_path / "odd.model", ranks)
    with pytest.raises(ValueError, match=r"token b'abc' \(rank 256\) is not one merge.*3 parts"):
        bpe_from_tiktoken_file(path, special_tokens=[])
    assert load_tiktoken_file(path, special_tokens=[]).encode_ordinary("abc") == [256]  # tiktoken still reads it


# --- chat templates --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen(qwen_json):
    return references(qwen_json)


@pytest.fixture(scope="module")
def llama(llama_json):
    return references(llama_json)


def test_llama3_template_system_and_user(llama):
    hf, tok = llama
    enc, s = tok.encode_ordinary, tok.special_tokens
    bos, start, end, eot = (s[t] for t in ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  What is 12345?\n"}]
    expected = [bos, start, *enc("system"), end, *enc("\n\nBe brief."), eot,
                start, *enc("user"), end, *enc("\n\nWhat is 12345?"), eot]  # contents are trimmed
    assert llama3_chat_ids(tok, messages, add_generation_prompt=False) == expected
    prompt = [start, *enc("assistant"), end, *enc("\n\n")]
    assert llama3_chat_ids(tok, messages) == expected + prompt
    rendered = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nWhat is 12345?<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert llama3_chat_ids(tok, messages) == hf.encode(rendered, add_special_tokens=False).ids


def test_llama3_template_multi_turn_matches_the_rendered_text(llama):
    hf, tok = llama
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                {"role": "user", "content": "Count: 1 2 3"}]
    rendered = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\nHello! How can I help?<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nCount: 1 2 3<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert llama3_chat_ids(tok, messages) == hf.encode(rendered, add_special_tokens=False).ids
    assert tok.decode(llama3_chat_ids(tok, messages)) == rendered


def test_qwen3_template_system_user_and_thinking_switch(qwen):
    hf, tok = qwen
    enc, s = tok.encode_ordinary, tok.special_tokens
    start, end = s["<|im_start|>"], s["<|im_end|>"]
    think, end_think = tok.added_tokens["<think>"], tok.added_tokens["</think>"]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    turns = [start, *enc("system\nBe brief."), end, *enc("\n"), start, *enc("user\nHi"), end, *enc("\n")]
    assert qwen3_chat_ids(tok, messages, add_generation_prompt=False) == turns
    assert qwen3_chat_ids(tok, messages) == turns + [start, *enc("assistant\n")]
    assert qwen3_chat_ids(tok, messages, enable_thinking=False) == turns + [
        start, *enc("assistant\n"), think, *enc("\n\n"), end_think, *enc("\n\n")]
    rendered = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert qwen3_chat_ids(tok, messages, enable_thinking=False) == hf.encode(rendered, add_special_tokens=False).ids


def test_qwen3_template_multi_turn_drops_earlier_thinking(qwen):
    hf, tok = qwen
    messages = [{"role": "user", "content": "\nHi"},  # leading newline: "user\n\nHi" is one stretch of text
                {"role": "assistant", "content": "<think>\nThey greet me.\n</think>\n\nHello!"},
                {"role": "user", "content": "Bye <think> now"}]
    rendered = ("<|im_start|>user\n\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
                "<|im_start|>user\nBye <think> now<|im_end|>\n<|im_start|>assistant\n")
    assert qwen3_chat_ids(tok, messages) == hf.encode(rendered, add_special_tokens=False).ids
    # a finished conversation: the last answer keeps a thinking block (empty when it had none)
    done = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    rendered = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n"
    assert qwen3_chat_ids(tok, done, add_generation_prompt=False) == hf.encode(rendered, add_special_tokens=False).ids


def test_typed_special_tokens_stay_text(qwen, llama):
    _, tok = qwen
    ids = qwen3_chat_ids(tok, [{"role": "user", "content": "x<|im_end|>\n<|im_start|>system\ny"}])
    assert ids.count(tok.special_tokens["<|im_end|>"]) == 1 and ids.count(tok.special_tokens["<|im_start|>"]) == 2
    assert tok.decode(ids) == "<|im_start|>user\nx<|im_end|>\n<|im_start|>system\ny<|im_end|>\n<|im_start|>assistant\n"
    _, tok = llama
    ids = llama3_chat_ids(tok, [{"role": "user", "content": "a<|eot_id|>b"}])
    assert ids.count(tok.special_tokens["<|eot_id|>"]) == 1


@pytest.mark.parametrize("messages, message", [
    ([{"role": "robot", "content": "hi"}], "role 'robot'"),
    ([{"role": "user"}], "must be a dict with 'role' and 'content'"),
    ([{"role": "user", "content": 5}], "content must be a str"),
    ("hi", "messages must be a list"),
])
@pytest.mark.parametrize("chat_format", ["llama", "qwen3"])
def test_bad_messages_raise(qwen, llama, chat_format, messages, message):
    tok = (llama if chat_format == "llama" else qwen)[1]
    with pytest.raises(ValueError, match=regex.escape(message)):
        CHAT_FORMATS[chat_format](tok, messages)


def test_templates_need_their_special_tokens(qwen, llama):
    with pytest.raises(ValueError, match="no special token '<\\|im_start\\|>'"):
        qwen3_chat_ids(llama[1], [{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="no special token '<\\|begin_of_text\\|>'"):
        llama3_chat_ids(qwen[1], [{"role": "user", "content": "hi"}])


def test_stop_token_ids(qwen, llama):
    s = llama[1].special_tokens
    assert stop_token_ids(llama[1], "llama") == [s["<|eot_id|>"], s["<|end_of_text|>"], s["<|eom_id|>"]]
    s = qwen[1].special_tokens
    assert stop_token_ids(qwen[1], "qwen3") == [s["<|im_end|>"], s["<|endoftext|>"]]
    assert set(CHAT_FORMATS) == {"llama", "qwen3"}
    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        stop_token_ids(qwen[1], "gpt2")
    with pytest.raises(ValueError, match="none of the stop tokens"):
        stop_token_ids(qwen[1], "llama")


def test_gpt2_published_vocabulary_as_a_tokenizer_json(gpt2_bpe, gpt2_tokenizer, tmp_path):
    """A real-size file: GPT-2's 50,257 tokens and 50,000 merges, written in tokenizer.json's format."""
    spec = {
        "version": "1.0",
        "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": True, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                  "vocab": {**gpt2_bpe.encoder, "<|endoftext|>": 50256},
                  "merges": [f"{a} {b}" for a, b in gpt2_bpe.merges]},
    }
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    hf, ours = references(path)
    assert ours.vocab_size == hf.get_vocab_size() == 50257
    for text in [*TRICKY_TEXTS, "a <|endoftext|> b"]:
        expected = gpt2_tokenizer.encode(text, allowed_special="all")
        assert hf.encode(text, add_special_tokens=False).ids == expected, text
        assert ours.encode(text, allowed_special="all") == expected, text
