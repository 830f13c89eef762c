"""Tests of chapter 6's summary module (ch06_classification/classification.py)."""
import json
import os
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ch04_gpt_model import GPTConfig, GPTModel
from ch05_pretraining import END_OF_TEXT_ID, TrainConfig, train_model
from ch06_classification import (
    CLASSIFIER_CONFIG,
    CLASSIFIER_WEIGHTS,
    LABELS,
    POOLING,
    SMS_SPAM_MEMBER,
    SMS_SPAM_URL,
    SpamDataset,
    add_classification_head,
    balance_classes,
    calc_accuracy_loader,
    class_logits,
    classification_loss,
    classify_text,
    download_sms_spam,
    encode_padded,
    pad_ids,
    evaluate_classifier,
    extract_member,
    freeze_for_finetuning,
    load_classifier,
    load_sms_spam,
    pool_logits,
    random_split,
    save_classifier,
)

pytestmark = pytest.mark.usefixtures("one_thread")
PAD = END_OF_TEXT_ID


def tiny_model(context_length: int = 64, num_classes: int | None = 2, seed: int = 0, drop_rate: float = 0.0) -> GPTModel:
    torch.manual_seed(seed)
    model = GPTModel(GPTConfig(vocab_size=50257, context_length=context_length, emb_dim=32, n_heads=2, n_layers=2,
                               drop_rate=drop_rate))
    return add_classification_head(model, num_classes) if num_classes else model


def toy_frame(n: int = 8) -> pd.DataFrame:
    texts = [("win cash prize now call" if i % 2 else "see you at dinner tonight") + f" {i}" for i in range(n)]
    return pd.DataFrame({"Label": ["spam" if i % 2 else "ham" for i in range(n)], "Text": texts})


# --- data ------------------------------------------------------------------------------------------------

def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_extract_member_writes_the_member_and_no_temporary_file(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"SMSSpamCollection": b"ham\thello\n", "sub/x.txt": b"x"})
    out = extract_member(archive, "SMSSpamCollection", tmp_path / "out")
    assert out == tmp_path / "out" / "SMSSpamCollection" and out.read_bytes() == b"ham\thello\n"
    assert extract_member(archive, "sub/x.txt", tmp_path / "out").read_bytes() == b"x"
    assert not list((tmp_path / "out").rglob("*.partial"))


def test_extract_member_returns_a_relative_path_for_a_relative_folder(tmp_path, monkeypatch):
    archive = make_zip(tmp_path / "a.zip", {"m": b"x"})
    monkeypatch.chdir(tmp_path)
    assert extract_member(archive, "m", "data") == Path("data") / "m"  # the notebook prints it: no local path


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/etc/evil", "..\\evil.txt", "C:\\evil.txt",
                                  "a/..", ".."])
def test_extract_member_refuses_names_that_leave_the_folder(tmp_path, name):
    archive = make_zip(tmp_path / "a.zip", {name: b"boom"})
    with pytest.raises(ValueError, match="outside"):
        extract_member(archive, name, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not list(tmp_path.rglob("*evil*"))


def test_extract_member_names_a_missing_member(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"other": b""})
    with pytest.raises(FileNotFoundError, match="SMSSpamCollection.*other"):
        extract_member(archive, "SMSSpamCollection", tmp_path)


@pytest.fixture(scope="module")
def sms_file(tmp_path_factory):
    if not os.environ.get("LLMS_DATA_MIRROR"):
        pytest.skip("needs LLMS_DATA_MIRROR (the SMS Spam Collection zip)")
    return download_sms_spam(tmp_path_factory.mktemp("sms"))


def test_sms_spam_url_basename_is_the_mirror_name():
    assert SMS_SPAM_URL.rsplit("/", 1)[1] == "sms+spam+collection.zip"


def test_download_sms_spam_reads_one_message_per_line(sms_file):
    assert sms_file.name == SMS_SPAM_MEMBER
    df = load_sms_spam(sms_file)
    lines = sms_file.read_text(encoding="utf-8").splitlines()
    assert len(df) == len(lines) == 5574
    assert df["Label"].value_counts().to_dict() == {"ham": 4827, "spam": 747}
    assert df["Text"].tolist() == [line.split("\t", 1)[1] for line in lines]
    # the trap the loader avoids: a default read treats '"' as quoting and merges lines
    assert len(pd.read_csv(sms_file, sep="\t", header=None)) < 5574
    assert download_sms_spam(sms_file.parent) == sms_file  # present: returned as it is


def test_load_sms_spam_keeps_quotes_and_na_as_text_and_rejects_unknown_labels(tmp_path):
    path = tmp_path / "s.tsv"
    path.write_text('ham\t"quoted start\nspam\tNA\nham\tend"\n', encoding="utf-8")
    df = load_sms_spam(path)
    assert df["Text"].tolist() == ['"quoted start', "NA", 'end"']
    path.write_text("ham\tok\nmaybe\tnot a label\n", encoding="utf-8")
    with pytest.raises(ValueError, match="maybe"):
        load_sms_spam(path)


def test_balance_classes_undersamples_the_majority_with_a_seed():
    df = pd.DataFrame({"Label": ["ham"] * 30 + ["spam"] * 7, "Text": [f"t{i}" for i in range(37)]})
    a, b, c = balance_classes(df, seed=1), balance_classes(df, seed=1), balance_classes(df, seed=2)
    assert a["Label"].value_counts().to_dict() == {"ham": 7, "spam": 7}
    assert set(a[a["Label"] == "spam"]["Text"]) == set(df[df["Label"] == "spam"]["Text"])  # every spam kept
    assert a.equals(b) and not a.equals(c)


def test_random_split_sizes_and_disjoint_parts():
    df = pd.DataFrame({"Label": ["ham"] * 1494, "Text": [str(i) for i in range(1494)]})
    train, val, test = random_split(df, 0.7, 0.1, seed=123)
    assert (len(train), len(val), len(test)) == (1045, 149, 300)
    assert sorted(pd.concat([train, val, test])["Text"], key=int) == df["Text"].tolist()
    assert train["Text"].tolist() != df["Text"][:1045].tolist()  # shuffled
    assert random_split(df, seed=123)[0].equals(train)


@pytest.mark.parametrize("fracs", [(0.0, 0.1), (0.7, 0.3), (1.0, 0.0), (0.5, -0.1)])
def test_random_split_rejects_bad_fractions(fracs):
    with pytest.raises(ValueError, match="train_frac"):
        random_split(toy_frame(), *fracs)


# --- dataset ---------------------------------------------------------------------------------------------

def test_pad_ids_cuts_and_pads_to_exactly_max_length():
    assert pad_ids([1, 2, 3], 5) == [1, 2, 3, PAD, PAD]
    assert pad_ids([1, 2, 3], 2) == [1, 2]
    assert pad_ids([], 2, pad_token_id=0) == [0, 0]


def test_encode_padded_pads_truncates_and_treats_end_of_text_in_a_message_as_text(gpt2_tokenizer):
    ids = gpt2_tokenizer.encode("hello world")
    assert encode_padded("hello world", gpt2_tokenizer, 5) == ids + [PAD] * (5 - len(ids))
    assert encode_padded("one two three four", gpt2_tokenizer, 2) == gpt2_tokenizer.encode("one two three four")[:2]
    assert PAD not in encode_padded("a <|endoftext|> b", gpt2_tokenizer, 12)[:8]


def test_spam_dataset_pads_to_the_longest_text_and_maps_labels(gpt2_tokenizer):
    df = toy_frame()
    ds = SpamDataset(df, gpt2_tokenizer)
    longest = max(len(gpt2_tokenizer.encode(t)) for t in df["Text"])
    assert ds.max_length == longest and ds.num_truncated == 0 and len(ds) == len(df)
    ids, label = ds[1]
    assert ids.shape == (longest,) and ids.dtype == torch.long and label.item() == LABELS.index("spam")
    assert ds.labels.tolist() == [i % 2 for i in range(len(df))]
    shorter = SpamDataset(df, gpt2_tokenizer, max_length=3)
    assert shorter.input_ids.shape == (len(df), 3) and shorter.num_truncated == len(df)


def test_spam_dataset_reads_a_csv_file(tmp_path, gpt2_tokenizer):
    toy_frame().to_csv(tmp_path / "t.csv", index=False)
    assert torch.equal(SpamDataset(tmp_path / "t.csv", gpt2_tokenizer).input_ids,
                       SpamDataset(toy_frame(), gpt2_tokenizer).input_ids)


def test_spam_dataset_errors(gpt2_tokenizer):
    long_text = pd.DataFrame({"Label": ["ham"], "Text": ["word " * 40]})
    with pytest.raises(ValueError, match="context_length=16: pass max_length"):
        SpamDataset(long_text, gpt2_tokenizer, context_length=16)
    assert SpamDataset(long_text, gpt2_tokenizer, max_length=16, context_length=16).num_truncated == 1
    with pytest.raises(ValueError, match="exceeds the model's context_length"):
        SpamDataset(toy_frame(), gpt2_tokenizer, max_length=32, context_length=16)
    with pytest.raises(ValueError, match="unknown labels"):
        SpamDataset(pd.DataFrame({"Label": ["eggs"], "Text": ["x"]}), gpt2_tokenizer)
    with pytest.raises(ValueError, match="no rows"):
        SpamDataset(toy_frame()[:0], gpt2_tokenizer)
    with pytest.raises(ValueError, match="max_length"):
        SpamDataset(toy_frame(), gpt2_tokenizer, max_length=0)


def test_spam_dataset_passes_pad_token_id_and_labels_on(gpt2_tokenizer):
    df = pd.DataFrame({"Label": ["spam", "ham"], "Text": ["win", "see you at dinner"]})
    ds = SpamDataset(df, gpt2_tokenizer, pad_token_id=0, labels=("spam", "ham"))
    win = gpt2_tokenizer.encode("win")
    assert ds.input_ids[0].tolist() == win + [0] * (ds.max_length - len(win)) and ds.max_length > len(win)
    assert ds.labels.tolist() == [0, 1]  # the order of the labels given, not LABELS


# --- model -----------------------------------------------------------------------------------------------

def test_add_classification_head_gives_class_scores_per_token():
    model = tiny_model(num_classes=None)
    add_classification_head(model, 3)
    assert model(torch.tensor([[1, 2, 3, 4]])).shape == (1, 4, 3)
    with pytest.raises(ValueError, match="num_classes"):
        add_classification_head(model, 0)


def test_add_classification_head_keeps_the_dtype():
    model = tiny_model(num_classes=None).to(torch.bfloat16)
    assert add_classification_head(model).out_head.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("trainable", ["head", "last_block", "all"])
def test_freeze_for_finetuning_counts_and_only_trainable_parameters_get_gradients(trainable):
    model = tiny_model()
    n = freeze_for_finetuning(model, trainable)
    head = sum(p.numel() for p in model.out_head.parameters())
    last = sum(p.numel() for p in model.trf_blocks[-1].parameters()) + sum(p.numel() for p in model.final_norm.parameters())
    expected = {"head": head, "last_block": head + last, "all": sum(p.numel() for p in model.parameters())}[trainable]
    assert n == expected
    model(torch.tensor([[1, 2, 3]]))[:, -1].sum().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert bool(frozen) == (trainable != "all")
    assert "tok_emb.weight" in frozen or trainable == "all"


def test_freeze_for_finetuning_rejects_unknown_choice():
    with pytest.raises(ValueError, match="trainable must be one of"):
        freeze_for_finetuning(tiny_model(), "middle")


# --- pooling, loss, accuracy -----------------------------------------------------------------------------

def test_pool_logits_on_a_hand_made_batch():
    ids = torch.tensor([[5, 6, 7, PAD], [8, 9, PAD, PAD], [PAD, PAD, PAD, PAD]])
    logits = torch.arange(24.0).view(3, 4, 2)
    assert pool_logits(logits, ids, "last").tolist() == [[6, 7], [14, 15], [22, 23]]
    assert pool_logits(logits, ids, "first").tolist() == [[0, 1], [8, 9], [16, 17]]
    assert pool_logits(logits, ids, "last_real").tolist() == [[4, 5], [10, 11], [16, 17]]
    assert pool_logits(logits, ids, "mean").tolist() == [[2, 3], [9, 10], [0, 0]]
    with pytest.raises(ValueError, match="pool must be one of"):
        pool_logits(logits, ids, "max")


def test_last_real_token_scores_do_not_depend_on_padding_but_last_position_does():
    model = tiny_model().eval()
    ids = [11, 22, 33, 44]
    with torch.no_grad():
        plain = class_logits(model, torch.tensor([ids]), "last")
        padded = torch.tensor([ids + [PAD] * 5])
        torch.testing.assert_close(class_logits(model, padded, "last_real"), plain, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(class_logits(model, padded, "last"), plain, atol=1e-3)


@pytest.mark.parametrize("pool", POOLING)
def test_classification_loss_is_cross_entropy_of_pooled_scores(pool):
    model = tiny_model().eval()
    ids, labels = torch.tensor([[1, 2, PAD], [3, 4, 5]]), torch.tensor([0, 1])
    expected = F.cross_entropy(pool_logits(model(ids), ids, pool), labels)
    torch.testing.assert_close(classification_loss((ids, labels), model, "cpu", None, pool), expected)


def test_class_logits_under_autocast_are_float32_and_close():
    model = tiny_model().eval()
    ids = torch.tensor([[1, 2, 3]])
    low = class_logits(model, ids, amp_dtype=torch.bfloat16)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, class_logits(model, ids), atol=5e-2, rtol=5e-2)


class FixedScores(torch.nn.Module):
    """Predicts class 1 exactly when the first token id is odd."""

    def forward(self, ids):
        odd = (ids[:, :1] % 2).float()  # (batch, 1)
        return torch.stack([1 - odd, odd], dim=-1).expand(-1, ids.shape[1], -1)  # (batch, tokens, 2)


def test_calc_accuracy_loader_counts_correct_texts_and_restores_the_mode():
    ids = torch.tensor([[1], [2], [3], [4], [5], [6]])
    labels = torch.tensor([1, 0, 0, 0, 1, 1])  # right, right, wrong, right, right, wrong
    loader = DataLoader(list(zip(ids, labels)), batch_size=2)
    model = FixedScores().train()
    assert calc_accuracy_loader(loader, model, "cpu") == pytest.approx(4 / 6)
    assert calc_accuracy_loader(loader, model, "cpu", num_batches=1) == 1.0
    assert model.training
    assert torch.isnan(torch.tensor(calc_accuracy_loader([], model, "cpu")))


@pytest.fixture
def toy_loaders(gpt2_tokenizer):
    ds = SpamDataset(toy_frame(16), gpt2_tokenizer)
    train = DataLoader(ds, batch_size=4, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0))
    return ds, train, DataLoader(ds, batch_size=4)


def test_evaluate_classifier_reports_loss_and_accuracy_and_draws_no_random_numbers(toy_loaders):
    ds, train, val = toy_loaders
    model = tiny_model(drop_rate=0.5).train()
    torch.manual_seed(1)
    before = torch.get_rng_state()
    metrics = evaluate_classifier(model, train, val, "cpu", eval_iter=2)
    assert torch.equal(torch.get_rng_state(), before) and model.training
    assert set(metrics) == {"train_loss", "val_loss", "train_acc", "val_acc"}
    ids, labels = ds.input_ids[:8], ds.labels[:8]
    model.eval()
    with torch.no_grad():
        assert metrics["val_loss"] == pytest.approx(classification_loss((ids, labels), model, "cpu").item(), rel=1e-5)
    assert metrics["val_acc"] == calc_accuracy_loader(DataLoader(ds, batch_size=4), model, "cpu", num_batches=2)


def test_train_model_with_the_classification_loss_learns_and_leaves_frozen_weights_alone(toy_loaders):
    ds, train, val = toy_loaders
    model = tiny_model()
    freeze_for_finetuning(model, "last_block")
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    head = model.out_head.weight.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    cfg = TrainConfig(num_epochs=8, peak_lr=1e-2, min_lr=1e-2, warmup_steps=0, grad_clip=None, eval_freq=4, eval_iter=4)
    torch.manual_seed(0)
    history = train_model(model, train, val, optimizer, "cpu", cfg, loss_fn=classification_loss,
                          eval_fn=evaluate_classifier, progress=False)
    assert history["val_acc"][-1] == 1.0 and history["val_loss"][-1] < history["val_loss"][0]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert not torch.equal(model.out_head.weight, head)


# --- use, save, load -------------------------------------------------------------------------------------

def test_classify_text_agrees_with_the_batch_path(gpt2_tokenizer):
    model = tiny_model().eval()
    text, max_length = "win cash now", 8
    label, prob = classify_text(text, model, gpt2_tokenizer, "cpu", max_length)
    scores = class_logits(model, torch.tensor([encode_padded(text, gpt2_tokenizer, max_length)]))[0]
    assert label == LABELS[int(scores.argmax())] and prob == pytest.approx(torch.softmax(scores, -1).max().item())
    ids = gpt2_tokenizer.encode(text) + [PAD] * (max_length - len(gpt2_tokenizer.encode(text)))
    with torch.no_grad():  # independently of class_logits: the model's last-position scores, by hand
        by_hand = torch.softmax(model(torch.tensor([ids]))[0, -1], dim=-1)
    assert prob == pytest.approx(by_hand.max().item(), rel=1e-6) and label == LABELS[int(by_hand.argmax())]
    with pytest.raises(ValueError, match="context_length"):
        classify_text(text, model, gpt2_tokenizer, "cpu", max_length=65)


@pytest.mark.parametrize("pool", ["last_real", "mean", "first"])
def test_classify_text_pools_as_asked(gpt2_tokenizer, pool):
    # A padded input, where each pooling gives other scores than the default "last": pool must reach the model.
    model = tiny_model(num_classes=3, seed=2).eval()
    labels, text, max_length = ("a", "b", "c"), "win cash now", 10
    n = len(gpt2_tokenizer.encode(text))
    with torch.no_grad():
        logits = model(torch.tensor([gpt2_tokenizer.encode(text) + [PAD] * (max_length - n)]))[0]  # (tokens, 3)
    pooled = {"last": logits[-1], "last_real": logits[n - 1], "mean": logits[:n].mean(0), "first": logits[0]}
    probs = {name: torch.softmax(scores, -1) for name, scores in pooled.items()}
    assert (probs[pool] - probs["last"]).abs().max() > 1e-3  # the test can tell the two apart
    label, prob = classify_text(text, model, gpt2_tokenizer, "cpu", max_length, labels=labels, pool=pool)
    assert label == labels[int(probs[pool].argmax())] and prob == pytest.approx(probs[pool].max().item(), rel=1e-5)


def test_classify_text_pads_with_pad_token_id(gpt2_tokenizer):
    model = tiny_model(seed=3).eval()
    text, max_length = "see you", 6
    ids = gpt2_tokenizer.encode(text)
    with torch.no_grad():
        scores = model(torch.tensor([ids + [0] * (max_length - len(ids))]))[0, -1]
    _, prob = classify_text(text, model, gpt2_tokenizer, "cpu", max_length, pad_token_id=0)
    assert prob == pytest.approx(torch.softmax(scores, -1).max().item(), rel=1e-6)
    assert prob != pytest.approx(classify_text(text, model, gpt2_tokenizer, "cpu", max_length)[1], rel=1e-4)


def test_classify_text_last_real_pooling_finds_a_custom_padding(gpt2_tokenizer):
    model = tiny_model(seed=3).eval()
    text, max_length = "see you", 6
    ids = gpt2_tokenizer.encode(text)
    with torch.no_grad():
        scores = model(torch.tensor([ids]))[0, -1]  # the last real token's scores do not depend on the padding
    _, prob = classify_text(text, model, gpt2_tokenizer, "cpu", max_length, pool="last_real", pad_token_id=0)
    assert prob == pytest.approx(torch.softmax(scores, -1).max().item(), rel=1e-5)


@pytest.mark.parametrize("pool", ["last_real", "mean"])
def test_loaders_and_evaluate_classifier_pass_pool_and_amp_dtype_on(gpt2_tokenizer, pool):
    # With the default pool="last" and amp_dtype=None, a setting dropped on the way to class_logits changes nothing.
    texts = ["win", "see you at dinner", "call now to win a big cash prize today", "ok then", "free entry", "hi mum",
             "you have won a prize, text back now", "on my way"]
    ds = SpamDataset(pd.DataFrame({"Label": ["spam", "ham", "spam", "ham"] * 2, "Text": texts}), gpt2_tokenizer)
    val = DataLoader(ds, batch_size=4)
    model = tiny_model(seed=4).eval()
    ids, labels = ds.input_ids[:8], ds.labels[:8]
    assert (ids == PAD).any()  # padded texts: the poolings differ
    with torch.no_grad():
        logits = pool_logits(model(ids), ids, pool)
        last = pool_logits(model(ids), ids, "last")
    loss, hits = F.cross_entropy(logits, labels).item(), (logits.argmax(-1) == labels).float().mean().item()
    assert loss != pytest.approx(F.cross_entropy(last, labels).item(), rel=1e-3)
    metrics = evaluate_classifier(model, val, val, "cpu", eval_iter=2, pool=pool)
    assert metrics["val_loss"] == metrics["train_loss"] == pytest.approx(loss, rel=1e-5)
    assert metrics["val_acc"] == calc_accuracy_loader(val, model, "cpu", num_batches=2, pool=pool) == hits
    with torch.no_grad():
        assert classification_loss((ids, labels), model, "cpu", pool=pool).item() == pytest.approx(loss, rel=1e-5)
    seen = set()
    hook = model.out_head.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
    evaluate_classifier(model, val, val, "cpu", eval_iter=1, amp_dtype=torch.bfloat16, pool=pool)
    calc_accuracy_loader(val, model, "cpu", num_batches=1, pool=pool, amp_dtype=torch.bfloat16)
    with torch.no_grad():
        classification_loss((ids, labels), model, "cpu", torch.bfloat16, pool)
    hook.remove()
    assert seen == {torch.bfloat16}


def test_save_and_load_classifier_round_trip(tmp_path, gpt2_tokenizer):
    model = tiny_model(num_classes=3, seed=5).eval()
    labels = ("a", "b", "c")
    out = save_classifier(model, tmp_path / "clf", max_length=12, labels=labels, pool="mean")
    assert sorted(p.name for p in out.iterdir()) == sorted([CLASSIFIER_CONFIG, CLASSIFIER_WEIGHTS])
    reloaded, meta = load_classifier(out)
    assert meta["labels"] == list(labels) and meta["max_length"] == 12 and meta["pool"] == "mean"
    assert not reloaded.training and reloaded.cfg == model.cfg
    ids = torch.tensor([[1, 2, 3, PAD]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids), model(ids))
    assert classify_text("hi", reloaded, gpt2_tokenizer, "cpu", 12, labels=labels) == classify_text(
        "hi", model, gpt2_tokenizer, "cpu", 12, labels=labels)


def test_save_classifier_checks_its_arguments_and_leaves_no_partial_file(tmp_path, monkeypatch):
    model = tiny_model()
    with pytest.raises(ValueError, match="2 outputs but 3 labels"):
        save_classifier(model, tmp_path, 8, labels=("a", "b", "c"))
    with pytest.raises(ValueError, match="pool"):
        save_classifier(model, tmp_path, 8, pool="max")
    import ch06_classification.classification as module

    def broken_save(*args, **kwargs):
        Path(args[1]).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(module, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_classifier(model, tmp_path / "x", 8)
    assert list((tmp_path / "x").iterdir()) == []


def test_load_classifier_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_classifier"):
        load_classifier(tmp_path)
    out = save_classifier(tiny_model(), tmp_path / "c", 8)
    meta = json.loads((out / CLASSIFIER_CONFIG).read_text())
    meta["num_classes"] = 5
    (out / CLASSIFIER_CONFIG).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="out_head.weight has shape"):
        load_classifier(out)


# --- mutation-pass survivors: each test below fails for one realistic slip in classification.py ------------------

def test_extract_member_creates_missing_parent_folders(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"sub/deeper/m.txt": b"x"})
    assert extract_member(archive, "sub/deeper/m.txt", tmp_path / "new" / "dir").read_bytes() == b"x"


def test_download_sms_spam_downloads_into_data_dir_not_the_working_folder(tmp_path, monkeypatch):
    import ch06_classification.classification as module

    def fake_download(url, dest_dir="."):  # the real default: the working folder
        return make_zip(Path(dest_dir) / url.rsplit("/", 1)[1], {SMS_SPAM_MEMBER: b"ham\thi\n"})

    monkeypatch.setattr(module, "download_file", fake_download)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    assert download_sms_spam(data_dir) == data_dir / SMS_SPAM_MEMBER
    assert (data_dir / "sms+spam+collection.zip").is_file() and list((tmp_path / "cwd").iterdir()) == []


def test_read_labeled_csv_keeps_na_and_null_as_text(tmp_path):
    from ch06_classification import read_labeled_csv

    (tmp_path / "d.csv").write_text("text,label\nNA,ham\nnull,spam\n", encoding="utf-8")
    assert read_labeled_csv(tmp_path / "d.csv")["Text"].tolist() == ["NA", "null"]


def test_balance_classes_does_not_depend_on_which_label_comes_first_and_keeps_two_columns():
    ham = pd.DataFrame({"Label": ["ham"] * 9, "Text": [f"h{i}" for i in range(9)]})
    spam = pd.DataFrame({"Label": ["spam"] * 4, "Text": [f"s{i}" for i in range(4)]})
    a = balance_classes(pd.concat([ham, spam], ignore_index=True), seed=3)
    b = balance_classes(pd.concat([spam, ham], ignore_index=True), seed=3)
    assert a["Label"].tolist() == ["ham"] * 4 + ["spam"] * 4  # grouped in label order
    assert a.equals(b) and list(a.columns) == ["Label", "Text"] and a.index.tolist() == list(range(8))


def test_random_split_allows_no_validation_part_and_keeps_two_columns():
    df = pd.DataFrame({"Label": ["ham"] * 10, "Text": [str(i) for i in range(10)]})
    train, val, test = random_split(df, 0.8, 0.0)
    assert (len(train), len(val), len(test)) == (8, 0, 2)
    for part in (train, val, test):
        assert list(part.columns) == ["Label", "Text"]
    assert train.index.tolist() == list(range(8))


def test_spam_dataset_accepts_a_longest_text_of_exactly_the_default_context_length(gpt2_tokenizer):
    for n, ok in ((1024, True), (1025, False)):  # GPT-2's context: 1024 tokens
        text = "hi" + " hi" * (n - 1)
        assert len(gpt2_tokenizer.encode(text)) == n
        df = pd.DataFrame({"Label": ["ham"], "Text": [text]})
        if ok:
            assert SpamDataset(df, gpt2_tokenizer).max_length == 1024
        else:
            with pytest.raises(ValueError, match="context_length=1024"):
                SpamDataset(df, gpt2_tokenizer)


def test_spam_dataset_takes_any_two_labels(gpt2_tokenizer):
    df = pd.DataFrame({"Label": ["pos", "neg", "pos"], "Text": ["great", "awful", "fine"]})
    assert SpamDataset(df, gpt2_tokenizer, labels=("neg", "pos")).labels.tolist() == [1, 0, 1]


def test_freeze_for_finetuning_leaves_the_last_of_three_blocks_trainable():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50257, context_length=16, emb_dim=16, n_heads=2, n_layers=3))
    freeze_for_finetuning(model, "last_block")
    trainable = {name.split(".")[0] + ("." + name.split(".")[1] if name.startswith("trf_blocks") else "")
                 for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"trf_blocks.2", "final_norm", "out_head"}


def test_pool_logits_mean_of_a_single_real_token_is_its_scores():
    ids = torch.tensor([[5, PAD, PAD]])
    logits = torch.arange(6.0).view(1, 3, 2) + 1
    assert pool_logits(logits, ids, "mean").tolist() == [[1, 2]]


def test_class_logits_autocasts_to_the_dtype_asked():
    model = tiny_model().eval()
    seen = set()
    hook = model.out_head.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
    with torch.no_grad():
        class_logits(model, torch.tensor([[1, 2, 3]]), amp_dtype=torch.float16)  # autocast's CPU default: bfloat16
    hook.remove()
    assert seen == {torch.float16}


def test_classify_text_accepts_max_length_equal_to_the_context_length(gpt2_tokenizer):
    model = tiny_model(context_length=16).eval()
    label, prob = classify_text("win cash now", model, gpt2_tokenizer, "cpu", max_length=16)
    assert label in LABELS and 0.5 <= prob <= 1


class DeviceRecorder(torch.nn.Module):
    """Records the device of the token ids it gets; scores on the CPU."""

    def __init__(self):
        super().__init__()
        self.cfg = GPTConfig(vocab_size=50257, context_length=16, emb_dim=8, n_heads=1, n_layers=1)
        self.devices = []

    def forward(self, ids):
        self.devices.append(ids.device.type)
        return torch.tensor([[[0.0, 1.0]]]).expand(1, ids.shape[1], 2)


def test_classify_text_puts_the_token_ids_on_the_device(gpt2_tokenizer):
    model = DeviceRecorder()
    assert classify_text("hi", model, gpt2_tokenizer, "meta", 4)[0] == "spam"
    assert model.devices == ["meta"]


def test_save_classifier_creates_nested_folders_and_overwrites(tmp_path):
    out = tmp_path / "a" / "b"
    save_classifier(tiny_model(seed=1), out, 8)
    save_classifier(tiny_model(seed=2), out, 9)
    model, meta = load_classifier(out)
    assert meta["max_length"] == 9
    assert torch.equal(model.out_head.weight, tiny_model(seed=2).out_head.weight)


@pytest.mark.parametrize("missing", [CLASSIFIER_CONFIG, CLASSIFIER_WEIGHTS])
def test_load_classifier_needs_both_files(tmp_path, missing):
    out = save_classifier(tiny_model(), tmp_path / "c", 8)
    (out / missing).unlink()
    with pytest.raises(FileNotFoundError, match="needs classifier.json and model.safetensors"):
        load_classifier(out)
