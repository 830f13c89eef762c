"""Unit tests for appendix_pytorch.pytorch_basics: device choice, MLP, toy data, training, checkpoints."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from appendix_pytorch import (
    DEVICE_ENV_VAR,
    MLP,
    ToyDataset,
    accuracy,
    check_positive_int,
    count_parameters,
    evaluate,
    get_device,
    logistic_regression_grads,
    make_toy_data,
    train,
    train_epoch,
)


pytestmark = pytest.mark.usefixtures("no_device_override")  # conftest.py: LLMS_DEVICE unset


# --- get_device ---------------------------------------------------------------------------------

def test_auto_choice_follows_cuda_then_mps_then_cpu():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert get_device().type == expected
    assert get_device("auto").type == expected


def test_cpu_forced_via_env_wins_over_argument(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV_VAR, "cpu")
    assert get_device() == torch.device("cpu")
    assert get_device("cuda") == torch.device("cpu")
    monkeypatch.setenv(DEVICE_ENV_VAR, "  CPU ")  # case and spaces do not matter
    assert get_device() == torch.device("cpu")


def test_empty_env_var_means_unset(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV_VAR, "")
    assert get_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["tpu", "gpu", "cpu:0", "mps:1", "cuda:x", "cuda:-1"])
def test_invalid_name_is_a_value_error_listing_valid_names(name):
    with pytest.raises(ValueError, match="not a device name.*cuda.*mps.*cpu"):
        get_device(name)


def test_invalid_env_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV_VAR, "gpu")
    with pytest.raises(ValueError, match=r"\$LLMS_DEVICE is 'gpu'"):
        get_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_a_clear_error(monkeypatch):
    with pytest.raises(RuntimeError, match="no cuda device; available here: .*cpu"):
        get_device("cuda")
    monkeypatch.setenv(DEVICE_ENV_VAR, "cuda:0")
    with pytest.raises(RuntimeError, match="LLMS_DEVICE"):
        get_device()


# --- MLP ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_inputs,n_hidden,n_outputs", [(2, 32, 2), (5, 7, 3), (1, 1, 1)])
def test_mlp_shapes_and_parameter_count_formula(n_inputs, n_hidden, n_outputs):
    torch.manual_seed(123)
    model = MLP(n_inputs, n_hidden, n_outputs)
    out = model(torch.randn(4, n_inputs))
    assert out.shape == (4, n_outputs)
    expected = (n_inputs + 1) * n_hidden + (n_hidden + 1) * n_hidden + (n_hidden + 1) * n_outputs
    assert count_parameters(model) == expected


def test_count_parameters_skips_frozen_ones():
    model = MLP(2, 4, 2)
    for p in model.layers[0].parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == (4 + 1) * 4 + (4 + 1) * 2


@pytest.mark.parametrize("args", [(0, 4, 2), (2, -1, 2), (2, 4, 0), (2.0, 4, 2), (True, 4, 2)])
def test_mlp_rejects_bad_sizes(args):
    with pytest.raises(ValueError, match="must be a positive integer"):
        MLP(*args)


# --- check_positive_int ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [1, 5, 10**12])
def test_check_positive_int_returns_the_value(value):
    assert check_positive_int("size", value) is value


@pytest.mark.parametrize("value", [True, False, 0, -1, 1.0, "3", None, 2.5])
def test_check_positive_int_rejects_non_positive_ints_naming_the_argument(value):
    with pytest.raises(ValueError) as err:
        check_positive_int("batch_size", value)
    assert str(err.value) == f"batch_size must be a positive integer, got {value!r}"


# --- toy data -----------------------------------------------------------------------------------

def test_toy_data_is_deterministic_per_seed_and_ignores_global_rng():
    x1, y1 = make_toy_data(300, seed=7)
    torch.manual_seed(999)  # the global generator must not matter
    x2, y2 = make_toy_data(300, seed=7)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = make_toy_data(300, seed=8)
    assert not torch.equal(x1, x3)


def test_toy_data_shapes_types_and_balance():
    x, y = make_toy_data(301, seed=1)
    assert x.shape == (301, 2) and x.dtype == torch.float32
    assert y.shape == (301,) and y.dtype == torch.int64
    assert set(y.tolist()) == {0, 1}
    assert abs(int((y == 0).sum()) - int((y == 1).sum())) <= 1


def test_toy_data_without_noise_lies_on_the_two_arcs():
    x, y = make_toy_data(200, seed=3, noise=0.0)
    centred = x + torch.tensor([0.5, 0.25])
    upper = centred[y == 0]
    lower = centred[y == 1] - torch.tensor([1.0, 0.5])
    assert torch.allclose(upper.norm(dim=1), torch.ones(len(upper)), atol=1e-5)
    assert torch.allclose(lower.norm(dim=1), torch.ones(len(lower)), atol=1e-5)
    assert (upper[:, 1] >= -1e-6).all() and (lower[:, 1] <= 1e-6).all()


@pytest.mark.parametrize("n,noise,match", [(1, 0.1, "n must be"), (10.5, 0.1, "n must be"), (10, -0.1, "noise")])
def test_toy_data_rejects_bad_arguments(n, noise, match):
    with pytest.raises(ValueError, match=match):
        make_toy_data(n, noise=noise)


def test_toy_dataset_indexing_and_length_check():
    x, y = make_toy_data(10, seed=0)
    ds = ToyDataset(x, y)
    assert len(ds) == 10
    xi, yi = ds[3]
    assert torch.equal(xi, x[3]) and yi == y[3]
    with pytest.raises(ValueError, match="same length"):
        ToyDataset(x, y[:-1])


# --- training and evaluation --------------------------------------------------------------------

def _loaders(n_train: int = 600, n_test: int = 300) -> tuple[DataLoader, DataLoader]:
    x, y = make_toy_data(n_train + n_test, seed=123)
    train_set = ToyDataset(x[:n_train], y[:n_train])
    test_set = ToyDataset(x[n_train:], y[n_train:])
    return (DataLoader(train_set, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)),
            DataLoader(test_set, batch_size=128))


def test_training_reduces_loss_and_reaches_high_accuracy():
    device = torch.device("cpu")
    train_loader, test_loader = _loaders()
    torch.manual_seed(123)
    model = MLP(2, 32, 2)
    before = evaluate(model, test_loader, device)
    losses = train(model, train_loader, torch.optim.Adam(model.parameters(), lr=0.01), device, n_epochs=15)
    assert len(losses) == 15
    assert losses[-1] < 0.3 * losses[0]
    assert evaluate(model, test_loader, device) < 0.3 * before
    assert accuracy(model, train_loader, device) > 0.9
    assert accuracy(model, test_loader, device) > 0.9


def test_train_epoch_returns_the_mean_loss_and_updates_weights():
    device = torch.device("cpu")
    x, y = make_toy_data(64, seed=5)
    loader = DataLoader(ToyDataset(x, y), batch_size=64)  # one batch: the mean loss is that batch's loss
    torch.manual_seed(0)
    model = MLP(2, 8, 2)
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y).item()
    w_before = model.layers[0].weight.clone()
    got = train_epoch(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), device)
    assert got == pytest.approx(expected, rel=1e-6)
    assert not torch.equal(w_before, model.layers[0].weight)


class _AlwaysClassZero(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.ones(len(x)), torch.zeros(len(x))], dim=1)  # (batch, 2)


def test_accuracy_and_evaluate_against_a_known_model():
    device = torch.device("cpu")
    y = torch.tensor([0, 0, 0, 1])
    loader = DataLoader(ToyDataset(torch.zeros(4, 2), y), batch_size=3)  # uneven last batch
    assert accuracy(_AlwaysClassZero(), loader, device) == pytest.approx(0.75)
    log_p = torch.log_softmax(torch.tensor([1.0, 0.0]), dim=0)
    expected = -(3 * log_p[0] + log_p[1]).item() / 4
    assert evaluate(_AlwaysClassZero(), loader, device) == pytest.approx(expected)


def test_empty_loader_and_bad_epochs_are_errors():
    device = torch.device("cpu")
    model = MLP(2, 4, 2)
    empty = DataLoader(ToyDataset(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)), batch_size=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for fn in (lambda: train_epoch(model, empty, opt, device), lambda: evaluate(model, empty, device),
               lambda: accuracy(model, empty, device)):
        with pytest.raises(ValueError, match="no batches"):
            fn()
    with pytest.raises(ValueError, match="n_epochs"):
        train(model, empty, opt, device, n_epochs=-1)
    assert train(model, empty, opt, device, n_epochs=0) == []


# --- checkpoints --------------------------------------------------------------------------------

def test_state_dict_round_trip_with_weights_only(tmp_path):
    torch.manual_seed(123)
    model = MLP(2, 16, 2)
    path = tmp_path / "mlp.pt"
    torch.save(model.state_dict(), path)
    torch.manual_seed(456)
    restored = MLP(2, 16, 2)
    assert not torch.equal(restored.layers[0].weight, model.layers[0].weight)
    restored.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(5, 2)
    assert torch.equal(restored(x), model(x))


def test_weights_only_refuses_code_in_a_pickle(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("should never run",))

    path = tmp_path / "bad.pt"
    torch.save({"w": torch.zeros(1), "x": Payload()}, path)
    with pytest.raises(Exception, match="Unsupported global|Weights only load failed"):
        torch.load(path, weights_only=True)


# --- logistic regression gradients ---------------------------------------------------------------

@pytest.mark.parametrize("n,d_in,seed", [(16, 3, 123), (50, 1, 1), (7, 10, 2)])
def test_logistic_regression_grads_match_autograd(n, d_in, seed):
    torch.manual_seed(seed)
    x = torch.randn(n, d_in, dtype=torch.float64)
    y = torch.randint(0, 2, (n,)).double()
    w = torch.randn(d_in, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    F.binary_cross_entropy_with_logits(x @ w + b, y).backward()
    dw, db = logistic_regression_grads(x, y, w.detach(), b.detach())
    assert dw.shape == (d_in,) and db.shape == ()
    assert torch.allclose(dw, w.grad) and torch.allclose(db, b.grad)


def test_logistic_regression_grads_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="expected x"):
        logistic_regression_grads(torch.zeros(4, 3), torch.zeros(4), torch.zeros(2), torch.zeros(()))
    with pytest.raises(ValueError, match="expected x"):
        logistic_regression_grads(torch.zeros(4, 3), torch.zeros(5), torch.zeros(3), torch.zeros(()))


def test_get_device_accepts_a_torch_device():
    assert get_device(torch.device("cpu")) == torch.device("cpu")
