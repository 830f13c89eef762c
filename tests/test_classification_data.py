"""Chapter 6's checks of a user's data and checkpoints: each bad input is one clear ValueError naming the fix."""
import json

import pandas as pd
import pytest
import torch

from ch04_gpt_model import GPTConfig, GPTModel
from ch06_classification import (
    CLASSIFIER_CONFIG,
    LABELS,
    SpamDataset,
    add_classification_head,
    check_same_shapes,
    label_names,
    labeled_frame,
    load_classifier,
    read_labeled_csv,
    save_classifier,
)


def tiny_classifier(emb_dim: int = 32, n_layers: int = 2) -> GPTModel:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50257, context_length=32, emb_dim=emb_dim, n_heads=2, n_layers=n_layers)
    return add_classification_head(GPTModel(cfg))


@pytest.mark.parametrize("header", ["text,label", "Label,Text", "TEXT, label", "label,id,text"])
def test_read_labeled_csv_finds_the_columns_in_any_case_and_order(tmp_path, header):
    columns = [c.strip().lower() for c in header.split(",")]
    values = {"text": ['"hello, you"', "win"], "label": ["ham", "spam"], "id": ["1", "2"]}
    rows = [",".join(values[c][i] for c in columns) for i in range(2)]
    (tmp_path / "d.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    df = read_labeled_csv(tmp_path / "d.csv")
    assert list(df.columns) == ["Label", "Text"]
    assert df.to_dict("list") == {"Label": ["ham", "spam"], "Text": ["hello, you", "win"]}


@pytest.mark.parametrize("content, message", [
    (b"", "d.csv is empty: it needs a header line text,label"),
    (b"\n\n", "d.csv is empty"),
    (b"message,class\nhi,ham\n", "d.csv has the columns ['message', 'class'] but needs a text and a label column"),
    (b"text,category\nhi,ham\n", "needs a label column: give it a header line such as text,label"),
    (b"text,label\ncaf\xe9,ham\n", "d.csv is not UTF-8 text (byte 0xe9): save it as UTF-8"),
    (b"text,label\nhi,ham\nwin, now,spam\n", "d.csv: a row has more fields than the header"),
    (b"text,label\nwin, now,spam\nhi,ham\n", "d.csv: the first row has more fields than the header"),
])
def test_read_labeled_csv_errors_name_the_file_and_the_fix(tmp_path, content, message):
    (tmp_path / "d.csv").write_bytes(content)
    with pytest.raises(ValueError, match="^" + str(tmp_path / "d.csv").replace("\\", "\\\\")) as err:
        read_labeled_csv(tmp_path / "d.csv")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_labeled_frame_accepts_good_data_and_checks_rows_texts_and_labels(tmp_path):
    df = pd.DataFrame({"label": ["spam", "ham"], "text": ["win", "hi"]})
    assert labeled_frame(df).to_dict("list") == {"Label": ["spam", "ham"], "Text": ["win", "hi"]}
    with pytest.raises(ValueError, match="the data has no rows"):
        labeled_frame(df[:0])
    with pytest.raises(ValueError, match=r"the data: the text in row 2 \(counting from 1 below the header\) is empty: "
                                         r"write it or delete the row \(2 of 3 rows have no text\)"):
        labeled_frame(pd.DataFrame({"Label": ["ham", "spam", "ham"], "Text": ["hi", " ", None]}))
    with pytest.raises(ValueError, match=r"unknown labels \['eggs'\]; expected one of \('ham', 'spam'\)"):
        labeled_frame(pd.DataFrame({"Label": ["eggs"], "Text": ["x"]}))
    assert len(labeled_frame(pd.DataFrame({"Label": ["eggs"], "Text": ["x"]}), labels=None)) == 1  # None: any label
    (tmp_path / "h.csv").write_text("text,label\n")
    with pytest.raises(ValueError, match="h.csv has no rows"):
        labeled_frame(tmp_path / "h.csv")


@pytest.mark.parametrize("values, names", [
    (["spam", "ham", "spam"], LABELS),  # ham/spam keep the chapter's order: ham is class 0
    (["pos", "neg"], ("neg", "pos")),
    (["b", "a", "a"], ("a", "b")),
])
def test_label_names_of_two_classes(values, names):
    assert label_names(pd.DataFrame({"Label": values, "Text": ["x"] * len(values)})) == names


@pytest.mark.parametrize("values", [["ham", "ham"], ["a", "b", "c"], []])
def test_label_names_refuses_other_than_two_classes(values):
    with pytest.raises(ValueError, match=r"d.csv: the labels .* are not two classes; a two-class classifier needs"):
        label_names(pd.DataFrame({"Label": values, "Text": ["x"] * len(values)}), "d.csv")


def test_spam_dataset_reads_a_text_label_csv_and_names_an_empty_text(tmp_path, gpt2_tokenizer):
    (tmp_path / "ok.csv").write_text("text,label\nhello there,ham\nwin now,spam\n")
    assert SpamDataset(tmp_path / "ok.csv", gpt2_tokenizer).labels.tolist() == [0, 1]
    (tmp_path / "bad.csv").write_text('text,label\nhello,ham\n"",spam\n')
    with pytest.raises(ValueError, match=r"bad.csv: the text in row 2 .* is empty"):
        SpamDataset(tmp_path / "bad.csv", gpt2_tokenizer)


def test_check_same_shapes_names_the_first_tensor_that_differs():
    model = tiny_classifier()
    check_same_shapes(model.state_dict(), model, "x", "fix")  # the same model: no error
    message = (r"^ckpt holds another model \(tok_emb.weight has shape \(50257, 16\) there but \(50257, 32\) here; "
               r"this one has emb_dim 32, 2 layers, context 32\): fix it$")
    with pytest.raises(ValueError, match=message):
        check_same_shapes(tiny_classifier(emb_dim=16).state_dict(), model, "ckpt", "fix it")
    with pytest.raises(ValueError, match=r"\(it has trf_blocks.2.\S+, which this model lacks;"):
        check_same_shapes(tiny_classifier(n_layers=3).state_dict(), model, "ckpt", "fix")
    with pytest.raises(ValueError, match=r"\(it lacks trf_blocks.1.\S+;"):
        check_same_shapes(tiny_classifier(n_layers=1).state_dict(), model, "ckpt", "fix")


def test_load_classifier_of_weights_that_do_not_fit_its_config_is_one_clear_error(tmp_path):
    out = save_classifier(tiny_classifier(), tmp_path / "c", 8)
    meta = json.loads((out / CLASSIFIER_CONFIG).read_text())
    meta["model_config"]["emb_dim"] = 64  # classifier.json of another model size
    (out / CLASSIFIER_CONFIG).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"c/model.safetensors holds another model \(tok_emb.weight has shape "
                                         r"\(50257, 32\) there but \(50257, 64\) here; .*: it does not fit the "
                                         r"classifier.json beside it: write both with save_classifier"):
        load_classifier(out)
