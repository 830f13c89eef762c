"""Unit tests for ch02_text_data.text_data: splitting, vocabularies, tokenizers, sliding-window data."""
import pytest
import torch

import ch02_text_data
from ch02_text_data import (
    END_OF_TEXT,
    UNK_TOKEN,
    GPTDataset,
    SimpleTokenizer,
    SimpleTokenizerWithUnk,
    build_vocab,
    create_dataloader,
    split_text,
)

STORY = (
    "The old painter kept his brushes in a tin. He didn't sell them--not even when the "
    '"great" collectors came, asking: "Are these the brushes?" He only smiled (a little).'
)


@pytest.fixture(scope="module")
def vocab():
    return build_vocab(split_text(STORY), special_tokens=[END_OF_TEXT, UNK_TOKEN])


def n_windows(n_tokens: int, max_length: int, stride: int) -> int:
    """Windows a text of n_tokens yields: starts 0, stride, ... with start + max_length < n_tokens."""
    return (n_tokens - max_length - 1) // stride + 1


# --- split_text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello, world. Is this-- a test?", ["Hello", ",", "world", ".", "Is", "this", "--", "a", "test", "?"]),
        ("He didn't--_would_ not.", ["He", "didn't", "--", "_", "would", "_", "not", "."]),
        ("'Gisburn's (last) work?'", ["'", "Gisburn's", "(", "last", ")", "work", "?", "'"]),
        ('"Yes," she said...', ['"', "Yes", ",", '"', "she", "said", ".", ".", "."]),
        ("a <|endoftext|> b <|unk|>", ["a", "<|endoftext|>", "b", "<|unk|>"]),
        ("café 1908 x-ray", ["café", "1908", "x", "-", "ray"]),
        ("  \n\t ", []),
    ],
)
def test_split_text_tricky_punctuation(text, expected):
    assert split_text(text) == expected


def test_split_text_drops_only_whitespace():
    tokens = split_text(STORY)
    assert "".join(tokens) == "".join(STORY.split())


def test_split_text_rejects_non_strings():
    with pytest.raises(TypeError, match="expects a str"):
        split_text(["not", "a", "string"])


# --- build_vocab ----------------------------------------------------------------------------------


def test_build_vocab_sorted_ids_then_special_tokens():
    vocab = build_vocab(["b", "a", "c", "a"], special_tokens=[END_OF_TEXT, UNK_TOKEN])
    assert vocab == {"a": 0, "b": 1, "c": 2, END_OF_TEXT: 3, UNK_TOKEN: 4}


def test_build_vocab_does_not_duplicate_special_tokens():
    vocab = build_vocab(["x", UNK_TOKEN], special_tokens=[UNK_TOKEN, UNK_TOKEN])
    assert sorted(vocab.values()) == list(range(len(vocab))) and len(vocab) == 2


def test_build_vocab_rejects_a_plain_string():
    with pytest.raises(TypeError, match="split_text"):
        build_vocab("hello world")


# --- SimpleTokenizer ------------------------------------------------------------------------------


def test_round_trip_encode_decode(vocab):
    tokenizer = SimpleTokenizer(vocab)
    ids = tokenizer.encode(STORY)
    assert len(ids) == len(split_text(STORY))
    assert tokenizer.decode(ids) == STORY  # STORY uses standard spacing, so decoding restores it
    assert tokenizer.encode(tokenizer.decode(ids)) == ids


def test_decode_normalises_whitespace_but_keeps_tokens(vocab):
    tokenizer = SimpleTokenizer(vocab)
    ids = tokenizer.encode("The  old\npainter ( a little ) .")
    assert tokenizer.decode(ids) == "The old painter (a little)."


def test_decode_accepts_tensors(vocab):
    tokenizer = SimpleTokenizer(vocab)
    ids = tokenizer.encode("He only smiled.")
    assert tokenizer.decode(torch.tensor(ids)) == "He only smiled."


def test_unknown_word_error_names_the_word(vocab):
    tokenizer = SimpleTokenizer(vocab)
    with pytest.raises(ValueError, match=r"'Hello' is not in the vocabulary \(\d+ tokens\)"):
        tokenizer.encode("Hello, painter.")


def test_unknown_id_error_names_the_id(vocab):
    tokenizer = SimpleTokenizer(vocab)
    with pytest.raises(ValueError, match=f"token id {len(vocab)} is not in the vocabulary"):
        tokenizer.decode([0, len(vocab)])


def test_tokenizer_rejects_bad_vocabularies():
    with pytest.raises(ValueError, match="empty"):
        SimpleTokenizer({})
    with pytest.raises(ValueError, match="same id"):
        SimpleTokenizer({"a": 0, "b": 0})


# --- SimpleTokenizerWithUnk and special tokens ------------------------------------------------------


def test_unk_tokenizer_maps_unknown_words(vocab):
    tokenizer = SimpleTokenizerWithUnk(vocab)
    ids = tokenizer.encode("Hello, painter. Goodbye?")
    unk = vocab[UNK_TOKEN]
    assert ids == [unk, vocab[","], vocab["painter"], vocab["."], unk, vocab["?"]]
    assert tokenizer.decode(ids) == "<|unk|>, painter. <|unk|>?"


def test_unk_tokenizer_requires_unk_entry():
    with pytest.raises(ValueError, match=r"no '<\|unk\|>' entry.*special_tokens"):
        SimpleTokenizerWithUnk(build_vocab(["a", "b"], special_tokens=[END_OF_TEXT]))


def test_endoftext_joins_two_texts(vocab):
    tokenizer = SimpleTokenizerWithUnk(vocab)
    text = f"The painter smiled. {END_OF_TEXT} He kept his brushes."
    ids = tokenizer.encode(text)
    assert ids.count(vocab[END_OF_TEXT]) == 1
    assert UNK_TOKEN not in tokenizer.decode(ids)
    assert tokenizer.decode(ids) == text


def test_special_tokens_are_single_ids_in_gpt2(gpt2_tokenizer):
    ids = gpt2_tokenizer.encode(f"a {END_OF_TEXT} b", allowed_special={END_OF_TEXT})
    assert 50256 in ids and gpt2_tokenizer.n_vocab == 50257


# --- GPTDataset -------------------------------------------------------------------------------------


def test_dataset_targets_are_inputs_shifted_by_one(gpt2_tokenizer):
    ids = gpt2_tokenizer.encode(STORY)
    dataset = GPTDataset(STORY, gpt2_tokenizer, max_length=5, stride=3)
    for i in range(len(dataset)):
        x, y = dataset[i]
        assert x.shape == y.shape == (5,) and x.dtype == torch.long
        assert x.tolist() == ids[3 * i : 3 * i + 5]
        assert y.tolist() == ids[3 * i + 1 : 3 * i + 6]
        assert torch.equal(x[1:], y[:-1])


@pytest.mark.parametrize("max_length, stride", [(1, 1), (4, 1), (4, 4), (4, 6), (8, 3), (10, 50)])
def test_number_of_windows_matches_formula(gpt2_tokenizer, max_length, stride):
    n = len(gpt2_tokenizer.encode(STORY))
    dataset = GPTDataset(STORY, gpt2_tokenizer, max_length=max_length, stride=stride)
    assert len(dataset) == n_windows(n, max_length, stride)
    # the last window still has a target, and one more window would not
    last_x, last_y = dataset[len(dataset) - 1]
    assert last_y.shape == (max_length,)
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_text_of_exactly_max_length_plus_one_tokens_gives_one_window(gpt2_tokenizer):
    text = gpt2_tokenizer.decode(gpt2_tokenizer.encode(STORY)[:9])
    assert len(gpt2_tokenizer.encode(text)) == 9
    assert len(GPTDataset(text, gpt2_tokenizer, max_length=8, stride=1)) == 1


@pytest.mark.parametrize("name", ["max_length", "stride"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_dataset_rejects_non_positive_sizes(gpt2_tokenizer, name, bad):
    kwargs = {"max_length": 4, "stride": 2, name: bad}
    with pytest.raises(ValueError, match=f"{name} must be a positive integer, got {bad!r}"):
        GPTDataset(STORY, gpt2_tokenizer, **kwargs)


def test_too_short_text_error_says_have_and_need(gpt2_tokenizer):
    n = len(gpt2_tokenizer.encode("A very short text."))
    with pytest.raises(ValueError, match=rf"text has {n} tokens.*max_length=10 needs at least 11"):
        GPTDataset("A very short text.", gpt2_tokenizer, max_length=10, stride=1)


def test_dataset_works_with_the_simple_tokenizer(vocab):
    tokenizer = SimpleTokenizer(vocab)
    dataset = GPTDataset(STORY, tokenizer, max_length=4, stride=4)
    assert len(dataset) == n_windows(len(tokenizer.encode(STORY)), 4, 4)
    assert dataset[0][0].tolist() == tokenizer.encode("The old painter kept")


def test_dataset_allows_endoftext_with_tiktoken(gpt2_tokenizer):
    text = f"{STORY} {END_OF_TEXT} {STORY}"
    dataset = GPTDataset(text, gpt2_tokenizer, max_length=8, stride=8)
    assert gpt2_tokenizer.eot_token in dataset.token_ids.tolist()


def test_dataset_passes_allowed_special_only_to_tokenizers_that_accept_it():
    class Recorder:
        def encode(self, text, allowed_special=frozenset()):
            self.allowed = allowed_special
            return list(range(10))

    class Plain:
        def encode(self, text):
            return list(range(10))

    recorder = Recorder()
    GPTDataset("anything", recorder, max_length=4, stride=1)
    assert recorder.allowed == {END_OF_TEXT}
    assert len(GPTDataset("anything", Plain(), max_length=4, stride=1)) == 6


def test_dataset_rejects_objects_without_encode():
    with pytest.raises(TypeError, match="encode"):
        GPTDataset(STORY, object(), max_length=4, stride=1)


# --- create_dataloader --------------------------------------------------------------------------------


def test_dataloader_token_ids_equal_tiktoken_gpt2(gpt2_tokenizer):
    loader = create_dataloader(STORY, batch_size=1, max_length=4, stride=4, shuffle=False, drop_last=False)
    seen = torch.cat([x.flatten() for x, _ in loader]).tolist()
    reference = gpt2_tokenizer.encode(STORY)
    assert seen == reference[: len(seen)]
    assert len(reference) - len(seen) <= 4  # only the tail that cannot form a whole window is unused


def test_dataloader_batch_shapes():
    loader = create_dataloader(STORY, batch_size=3, max_length=5, stride=2, shuffle=False)
    for x, y in loader:
        assert x.shape == y.shape == (3, 5)
        assert x.dtype == y.dtype == torch.long


def test_dataloader_drop_last(gpt2_tokenizer):
    n = n_windows(len(gpt2_tokenizer.encode(STORY)), 4, 4)
    assert n % 3 != 0, "pick sizes where the last batch is partial"
    dropped = create_dataloader(STORY, batch_size=3, max_length=4, stride=4, shuffle=False, drop_last=True)
    kept = create_dataloader(STORY, batch_size=3, max_length=4, stride=4, shuffle=False, drop_last=False)
    assert len(dropped) == n // 3 and len(kept) == n // 3 + 1
    assert [x.shape[0] for x, _ in kept][-1] == n % 3
    assert all(x.shape[0] == 3 for x, _ in dropped)


def test_dataloader_refuses_to_be_empty():
    with pytest.raises(ValueError, match=r"only \d+ windows.*batch_size=1000.*drop_last=False"):
        create_dataloader(STORY, batch_size=1000, max_length=4, stride=4)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        create_dataloader(STORY, batch_size=0, max_length=4, stride=4)


def test_dataloader_no_shuffle_is_deterministic_and_in_order(gpt2_tokenizer):
    def batches():
        return [x for x, _ in create_dataloader(STORY, batch_size=2, max_length=4, stride=1, shuffle=False)]

    first, second = batches(), batches()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    ids = gpt2_tokenizer.encode(STORY)
    assert first[0].tolist() == [ids[0:4], ids[1:5]]


def test_dataloader_shuffle_is_reproducible_under_manual_seed():
    loader = create_dataloader(STORY, batch_size=2, max_length=4, stride=1, shuffle=True, drop_last=False)
    torch.manual_seed(123)
    a = torch.cat([x for x, _ in loader])
    torch.manual_seed(123)
    b = torch.cat([x for x, _ in loader])
    torch.manual_seed(321)
    c = torch.cat([x for x, _ in loader])
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    ordered = create_dataloader(STORY, batch_size=2, max_length=4, stride=1, shuffle=False, drop_last=False)
    ordered = torch.cat([x for x, _ in ordered])
    assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, ordered.tolist()))  # same windows, new order


def test_dataloader_accepts_a_generator():
    def first_batch(seed):
        gen = torch.Generator().manual_seed(seed)
        return next(iter(create_dataloader(STORY, batch_size=4, max_length=4, stride=1, generator=gen)))[0]

    assert torch.equal(first_batch(7), first_batch(7))


def test_dataloader_custom_tokenizer(vocab):
    tokenizer = SimpleTokenizerWithUnk(vocab)
    x, y = next(iter(create_dataloader(STORY, batch_size=2, max_length=3, stride=3, shuffle=False, tokenizer=tokenizer)))
    assert tokenizer.decode(x[0]) == "The old painter"
    assert tokenizer.decode(y[0]) == "old painter kept"


# --- package and real data ------------------------------------------------------------------------------


def test_package_reexports_text_data_and_download():
    from ch02_text_data import download, text_data

    assert set(text_data.__all__) <= set(ch02_text_data.__all__)
    assert {"download_file", "DownloadError", "THE_VERDICT_URL", "THE_VERDICT_SHA256"} <= set(ch02_text_data.__all__)
    assert ch02_text_data.download_file is download.download_file
    assert len(ch02_text_data.__all__) == len(set(ch02_text_data.__all__))


def test_the_verdict_end_to_end(the_verdict, gpt2_tokenizer):
    text = the_verdict
    assert len(text) == 20479
    tokenizer = SimpleTokenizer(build_vocab(split_text(text)))
    ids = tokenizer.encode(text)
    assert tokenizer.encode(tokenizer.decode(ids)) == ids
    loader = create_dataloader(text, batch_size=8, max_length=256, stride=128, shuffle=False)
    assert len(loader.dataset) == n_windows(len(gpt2_tokenizer.encode(text)), 256, 128)
    x, y = next(iter(loader))
    assert x.shape == (8, 256)
    assert x[0].tolist() == gpt2_tokenizer.encode(text)[:256]
