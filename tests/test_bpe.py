"""Tests for ch02_text_data/bpe.py: training by hand-checkable examples, GPT-2 encoding against
tiktoken id for id, byte-exact round trips, special tokens, saving and loading in GPT-2's file format,
and clear errors on bad input.

The GPT-2 files come through the course download helper (conftest.py's fetch_or_skip): from the mirror
named by LLMS_DATA_MIRROR (CI sets it) or from the internet. Without either, the GPT-2 tests are skipped.
"""
import json
import random
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from ch02_text_data.bpe import (
    BPETokenizer,
    apply_merges,
    bytes_to_unicode,
    merge_pair,
    pretokenize,
    train_bpe,
)
from ch02_text_data.download import GPT2_ENCODER_SHA256, GPT2_ENCODER_URL, GPT2_VOCAB_BPE_SHA256, GPT2_VOCAB_BPE_URL
from ch02_text_data.text_data import END_OF_TEXT

HARD_TEXTS = [
    "Hello, world!",
    "👋 👋🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🧑🏿‍💻",  # skin tones and zero-width-joiner sequences
    "東京は日本の首都です。中文也可以。한국어",
    "café naïve cafe\u0301 nai\u0308ve Ångström Z\u0351\u0336a\u0337lgo",  # precomposed and combining
    "   multiple   spaces   ",
    "\n\n\n",
    "\t",
    "\t\tindented\n\t}\r\n",
    "1234567",
    "3.14159, 1,000,000 and ١٢٣ and ²³",
    "it's they're I'd we'll you've I'm IT'S don’t",
    "Ελληνικά русский עברית العربية हिन्दी mixed ascii",
    "trailing spaces   ",
    "   leading spaces",
    " ",
    "a\x1c\x1db\x85c\u00a0d\u3000e",
    "<|endoftext",
    "",
]


@pytest.fixture(scope="module")
def gpt2_files(fetch_or_skip) -> tuple[Path, Path]:
    """Paths of GPT-2's encoder.json and vocab.bpe, as OpenAI published them."""
    return fetch_or_skip(GPT2_ENCODER_URL, GPT2_ENCODER_SHA256), fetch_or_skip(GPT2_VOCAB_BPE_URL, GPT2_VOCAB_BPE_SHA256)


@pytest.fixture(scope="module")
def gpt2_tok(gpt2_files) -> BPETokenizer:
    return BPETokenizer.from_gpt2_files(*gpt2_files)


def random_text(rng: random.Random) -> str:
    """ASCII, whitespace, contractions and random code points assigned in Python's Unicode database."""
    pieces = [*"aZ09 '.,!-_", "  ", "\n", "\t", "\r\n", "'s", "'ll", "'VE", "\u00a0", "\u3000", "\x1c", "\x85"]
    out = []
    for _ in range(rng.randrange(40)):
        if rng.random() < 0.5:
            out.append(rng.choice(pieces))
        else:
            while unicodedata.category(ch := chr(rng.randrange(0x110000))) in ("Cn", "Cs"):
                pass
            out.append(ch)
    return "".join(out)


# --- bytes, pre-tokenizer, merging ----------------------------------------------------------------


def test_bytes_to_unicode_is_a_printable_bijection():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert all(ch.isprintable() and not ch.isspace() for ch in table.values())
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"
    assert all(table[b] == chr(b) for b in range(ord("!"), ord("~") + 1))


def test_pretokenize_splits_like_gpt2():
    assert pretokenize("It's  a test,\n\nok 42!!") == ["It", "'s", " ", " a", " test", ",", "\n", "\n", "ok", " 42", "!!"]
    assert pretokenize("x   y") == ["x", "  ", " y"]  # the last space goes with the next word
    assert pretokenize("café 東京") == ["café", " 東京"]  # \p{L} covers every script
    assert "".join(pretokenize(HARD_TEXTS[3])) == HARD_TEXTS[3]


def test_merge_pair_replaces_non_overlapping_occurrences_left_to_right():
    assert merge_pair(["a", "a", "a"], ("a", "a")) == ["aa", "a"]
    assert merge_pair(["a", "b", "a", "b"], ("a", "b")) == ["ab", "ab"]
    assert merge_pair(["a", "b"], ("b", "a")) == ["a", "b"]
    assert merge_pair([], ("a", "b")) == []


def test_apply_merges_uses_lowest_rank_first():
    assert apply_merges(["a", "b", "c"], {("b", "c"): 0, ("a", "b"): 1}) == ["a", "bc"]
    assert apply_merges(["a", "b", "c"], {("a", "b"): 0, ("b", "c"): 1}) == ["ab", "c"]
    assert apply_merges(["a", "b", "c"], {("a", "b"): 0, ("ab", "c"): 1}) == ["abc"]
    assert apply_merges(["x"], {}) == ["x"]


# --- training ----------------------------------------------------------------------------------------


def test_train_learns_the_most_frequent_pairs_hand_checked():
    # pre-tokens: "the", " cat" x2, " sat" x2, " on", " the" x2, " mat"
    # 'a t' occurs 5 times; 'h e' and 't h' 3 times each (tie: 'h e' sorts first); then 't he' 3 times.
    merges = train_bpe("the cat sat on the mat the cat sat", 8)
    assert merges[:3] == [("a", "t"), ("h", "e"), ("t", "he")]
    # all later pairs occur twice; ties go in string order, and 'Ġ' (U+0120) sorts after ASCII
    assert merges[3:] == [("c", "at"), ("s", "at"), ("Ġ", "cat"), ("Ġ", "sat"), ("Ġ", "the")]


def test_train_counts_repeated_pretokens_and_stops_when_nothing_is_left():
    assert train_bpe("aaaa", 5) == [("a", "a"), ("aa", "aa")]  # counting sees 3 overlapping 'a a', merging makes 2
    assert train_bpe("ab ab ab abc", 2) == [("a", "b"), ("Ġ", "ab")]
    assert train_bpe("ab", 10) == [("a", "b")]  # stops early: every pre-token is one symbol
    assert train_bpe("", 3) == []
    assert train_bpe("hello", 0) == []


def _train_by_recounting(text: str, n_merges: int) -> list[tuple[str, str]]:
    """Reference trainer: recount every pair after every merge."""
    byte_encoder = bytes_to_unicode()
    words = Counter(tuple(byte_encoder[b] for b in w.encode("utf-8")) for w in pretokenize(text))
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = Counter()
        for word, count in words.items():
            merged[tuple(merge_pair(list(word), best))] += count
        words = merged
    return merges


def test_incremental_training_equals_recounting():
    rng = random.Random(123)
    syllables = ["ka", "to", "ri", "an", "e", "ss", "é", "日", "本", " ", "  ", "\n", ".", "9"]
    text = "".join(rng.choice(syllables) for _ in range(3000))
    assert train_bpe(text, 150) == _train_by_recounting(text, 150)


def test_trained_tokenizer_round_trips_and_compresses():
    rng = random.Random(123)
    words = ["the", "cat", "sat", "on", "mat", "dog", "ran", "über", "naïve", "猫"]
    text = " ".join(rng.choice(words) for _ in range(2000))
    tok = BPETokenizer.train(text, 20)
    assert len(tok.merges) == 20 and tok.vocab_size == 256 + 20 + 1
    assert tok.special_tokens == {END_OF_TEXT: 256 + 20}
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) < 0.6 * len(text.encode("utf-8"))
    assert max(ids) < tok.vocab_size
    for s in HARD_TEXTS:  # unseen text falls back to bytes but still round-trips exactly
        assert tok.decode(tok.encode(s)) == s
    assert tok.encode("cat" + END_OF_TEXT, allowed_special="all")[-1] == 256 + 20
    full = BPETokenizer.train(text, 1000)  # stops early, once every distinct pre-token is one token
    assert len(full.merges) < 1000
    assert len(full.encode(text)) == len(pretokenize(text)) == 2000  # one token per word


def test_trained_tokenizer_ids_are_bytes_then_merges():
    tok = BPETokenizer.train("abab abab", 2)
    assert tok.encode("A") == [ord("A")]
    assert tok.merges == [("a", "b"), ("ab", "ab")]
    assert tok.encode("abab") == [257] and tok.encode("ab") == [256]


# --- GPT-2 against tiktoken ------------------------------------------------------------------------


def test_gpt2_files_load(gpt2_tok):
    assert gpt2_tok.vocab_size == 50257
    assert len(gpt2_tok.merges) == 50000
    assert gpt2_tok.special_tokens == {END_OF_TEXT: 50256}


def test_the_verdict_matches_tiktoken(gpt2_tok, gpt2_tokenizer, the_verdict):
    ids = gpt2_tok.encode(the_verdict)
    assert ids == gpt2_tokenizer.encode(the_verdict)
    assert gpt2_tok.decode(ids) == the_verdict


@pytest.mark.parametrize("text", HARD_TEXTS, ids=range(len(HARD_TEXTS)))
def test_hard_texts_match_tiktoken_and_round_trip(gpt2_tok, gpt2_tokenizer, text):
    ids = gpt2_tok.encode(text)
    assert ids == gpt2_tokenizer.encode(text)
    assert gpt2_tok.decode_bytes(ids) == text.encode("utf-8")
    assert gpt2_tok.decode(ids) == text


def test_random_unicode_strings_match_tiktoken(gpt2_tok, gpt2_tokenizer):
    rng = random.Random(123)
    for _ in range(1000):
        text = random_text(rng)
        ids = gpt2_tok.encode(text)
        assert ids == gpt2_tokenizer.encode(text), repr(text)
        assert gpt2_tok.decode(ids) == text, repr(text)


def test_special_tokens_follow_tiktoken_rules(gpt2_tok, gpt2_tokenizer):
    text = "end.<|endoftext|>Start<|endoftext|><|endoftext|>"
    for kwargs in [{"allowed_special": {END_OF_TEXT}}, {"allowed_special": "all"}, {"disallowed_special": ()}]:
        assert gpt2_tok.encode(text, **kwargs) == gpt2_tokenizer.encode(text, **kwargs), kwargs
    assert gpt2_tok.encode(END_OF_TEXT, allowed_special={END_OF_TEXT}) == [50256]
    assert gpt2_tok.decode(gpt2_tok.encode(text, allowed_special="all")) == text
    with pytest.raises(ValueError, match="special token '<\\|endoftext\\|>'.*allowed_special"):
        gpt2_tok.encode(text)
    with pytest.raises(ValueError):
        gpt2_tokenizer.encode(text)  # the reference behaves the same way


def test_partial_utf8_tokens_decode_like_tiktoken(gpt2_tok, gpt2_tokenizer):
    ids = gpt2_tok.encode("👋🏽")
    assert len(ids) > 2
    for i in ids:
        assert gpt2_tok.decode_bytes([i]) == gpt2_tokenizer.decode_single_token_bytes(i)
        assert gpt2_tok.decode([i]) == gpt2_tokenizer.decode([i])  # '\ufffd' for a cut-up character


def test_lone_surrogates_become_replacement_characters_like_tiktoken(gpt2_tok, gpt2_tokenizer):
    text = "ab\udc80cd\ud83d"
    assert gpt2_tok.encode(text) == gpt2_tokenizer.encode(text)


def test_cache_fills_and_gives_the_same_ids(gpt2_tok):
    gpt2_tok.cache.clear()
    cold = gpt2_tok.encode("the cat and the hat")
    assert " the" in gpt2_tok.cache
    assert gpt2_tok.encode("the cat and the hat") == cold


# --- saving and loading ----------------------------------------------------------------------------

PAD = "<|pad|>"


@pytest.fixture(scope="module")
def trained_tok() -> BPETokenizer:
    """A small tokenizer with non-ASCII merges and two special tokens."""
    rng = random.Random(7)
    words = ["the", "cat", "über", "naïve", "猫", "ÅngstrÖm", "42", "!!", "\n"]
    text = " ".join(rng.choice(words) for _ in range(3000))
    tok = BPETokenizer.train(text, 30, special_tokens=(END_OF_TEXT, PAD))
    assert len(tok.merges) == 30
    return tok


def test_save_then_load_gives_the_same_tokenizer(trained_tok, tmp_path):
    folder = tmp_path / "nested" / "tok"  # save creates missing folders
    trained_tok.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["encoder.json", "vocab.bpe"]  # no .partial left
    loaded = BPETokenizer.load(folder)
    assert any(ord(ch) > 127 and ch != "Ġ" for a, b in loaded.merges for ch in a + b)  # UTF-8 of ü, ï, 猫...
    assert loaded.encoder == trained_tok.encoder
    assert loaded.merges == trained_tok.merges
    assert loaded.special_tokens == trained_tok.special_tokens == {END_OF_TEXT: 256 + 30, PAD: 256 + 31}
    assert loaded.vocab_size == trained_tok.vocab_size
    texts = [*HARD_TEXTS, "über naïve 猫 the cat", f"a{END_OF_TEXT}b{PAD}{PAD}ü", PAD]
    for text in texts:
        ids = trained_tok.encode(text, allowed_special="all")
        assert loaded.encode(text, allowed_special="all") == ids, repr(text)
        assert loaded.encode(text, disallowed_special=()) == trained_tok.encode(text, disallowed_special=())
        assert loaded.decode(ids) == trained_tok.decode(ids) == text
    assert loaded.encode(PAD, allowed_special={PAD}) == [256 + 31]
    with pytest.raises(ValueError, match="not allowed"):
        loaded.encode(PAD)  # still a special token, with tiktoken's rules


def test_saved_files_are_gpt2_format_and_load_with_from_gpt2_files(trained_tok, tmp_path):
    trained_tok.save(str(tmp_path))  # a str folder works too
    encoder_json, vocab_bpe = tmp_path / "encoder.json", tmp_path / "vocab.bpe"
    tokens = json.loads(encoder_json.read_text(encoding="utf-8"))
    assert tokens == {**trained_tok.encoder, **trained_tok.special_tokens}
    assert list(tokens.values()) == sorted(tokens.values())  # ordered by id; the specials come last
    assert list(tokens)[-2:] == [END_OF_TEXT, PAD]
    lines = vocab_bpe.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "#version: 0.2" and lines[-1] == ""  # one line per merge, each ending in a newline
    assert lines[1:-1] == [f"{a} {b}" for a, b in trained_tok.merges]
    tok = BPETokenizer.from_gpt2_files(encoder_json, vocab_bpe)
    assert (tok.encoder, tok.merges, tok.special_tokens) == (
        trained_tok.encoder, trained_tok.merges, trained_tok.special_tokens)


def test_gpt2_tokenizer_saves_openais_files_byte_for_byte(gpt2_tok, gpt2_files, tmp_path):
    gpt2_tok.save(tmp_path)
    for original in gpt2_files:
        assert (tmp_path / original.name).read_bytes() == original.read_bytes(), original.name
    loaded = BPETokenizer.load(tmp_path)
    assert loaded.special_tokens == {END_OF_TEXT: 50256}
    text = HARD_TEXTS[1] + END_OF_TEXT + HARD_TEXTS[2]
    assert loaded.encode(text, allowed_special="all") == gpt2_tok.encode(text, allowed_special="all")


def test_save_overwrites_and_a_failed_save_leaves_the_old_files(trained_tok, tmp_path, monkeypatch):
    BPETokenizer.train("ab ab ab", 1).save(tmp_path)
    trained_tok.save(tmp_path)  # overwrites
    assert BPETokenizer.load(tmp_path).merges == trained_tok.merges
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_write_text = Path.write_text

    def disk_full_on_vocab(self, data, *args, **kwargs):
        if self.name.startswith("vocab.bpe"):
            real_write_text(self, data[:10], *args, **kwargs)  # half a file, then the disk is full
            raise OSError(28, "No space left on device")
        return real_write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full_on_vocab)
    with pytest.raises(OSError, match="No space left"):
        BPETokenizer.train("xy xy xy", 1).save(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # old files intact, no leftovers


def test_load_reports_missing_or_broken_files_clearly(trained_tok, tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer folder .*no_such_folder.*encoder.json and vocab.bpe"):
        BPETokenizer.load(tmp_path / "no_such_folder")
    with pytest.raises(FileNotFoundError, match="has no encoder.json and no vocab.bpe"):
        BPETokenizer.load(tmp_path)
    trained_tok.save(tmp_path)
    (tmp_path / "vocab.bpe").unlink()
    with pytest.raises(FileNotFoundError, match="has no vocab.bpe"):
        BPETokenizer.load(tmp_path)
    trained_tok.save(tmp_path)
    (tmp_path / "encoder.json").write_text('{"a": 0,', encoding="utf-8")
    with pytest.raises(ValueError, match="encoder.json: not valid JSON"):
        BPETokenizer.load(tmp_path)
    (tmp_path / "encoder.json").write_text('["a", "b"]', encoding="utf-8")
    with pytest.raises(ValueError, match="expected a JSON object that maps token strings to integer ids"):
        BPETokenizer.load(tmp_path)


def test_save_refuses_what_gpt2_files_cannot_hold(tmp_path):
    byte_tokens = {ch: b for b, ch in bytes_to_unicode().items()}
    with pytest.raises(ValueError, match="only a tokenizer that uses GPT2_PATTERN can be saved"):
        BPETokenizer(byte_tokens, [], pattern=r"\S+|\s+").save(tmp_path)
    with pytest.raises(ValueError, match="'a' is both a special and an ordinary token"):
        BPETokenizer(byte_tokens, [], {"a": 256}).save(tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_merges", [-1, 2.5, True, "10"])
def test_train_rejects_bad_n_merges(n_merges):
    with pytest.raises(ValueError, match="n_merges must be an integer >= 0"):
        train_bpe("some text", n_merges)
    with pytest.raises(ValueError, match="n_merges"):
        BPETokenizer.train("some text", n_merges)


def test_encode_and_decode_reject_bad_input():
    tok = BPETokenizer.train("hello hello", 3)
    with pytest.raises(ValueError, match="unknown token id 9999"):
        tok.decode([104, 9999])
    with pytest.raises(ValueError, match="unknown special tokens"):
        tok.encode("hi", allowed_special={"<|pad|>"})
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(b"hello")


def test_constructor_rejects_inconsistent_vocabularies(tmp_path):
    byte_tokens = {ch: b for b, ch in bytes_to_unicode().items()}
    with pytest.raises(ValueError, match="all 256 single-byte tokens"):
        BPETokenizer({"a": 0}, [])
    with pytest.raises(ValueError, match="'ab' is not in it"):
        BPETokenizer(byte_tokens, [("a", "b")])
    with pytest.raises(ValueError, match="special-token ids must differ"):
        BPETokenizer(byte_tokens, [], {END_OF_TEXT: 65})
    encoder_json = tmp_path / "encoder.json"
    encoder_json.write_text(json.dumps(byte_tokens), encoding="utf-8")
    vocab_bpe = tmp_path / "vocab.bpe"
    vocab_bpe.write_text("#version: 0.2\na b c\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: expected two symbols"):
        BPETokenizer.from_gpt2_files(encoder_json, vocab_bpe)
