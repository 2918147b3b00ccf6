"""Tasks: token layouts, encode/decode round trips, splits, OOD samples, grids and their errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from equiv_tools import AdditionTask, InputError, ModularDigitTask, ModularTask, MultiplicationTask, make_task
from equiv_tools.core.tasks import parse_operand, task_from_dict


def test_paper_layout_example():
    # 349 + 705 = 1054 is 00349 00705 450100 in the paper's layout
    tokens = AdditionTask(train_digits=3, width=5).encode([349], [705])
    assert "".join(map(str, tokens[0])) == "0034900705" + "450100"
    assert AdditionTask().n_ctx == 15


def test_multiplication_and_modular_layouts():
    assert "".join(map(str, MultiplicationTask(train_digits=2, width=4).encode([12], [34])[0])) == "00120034" + "80400000"
    assert ModularTask(p=113).encode([3], [4]).tolist() == [[3, 4, 113, 7]]
    assert ModularTask(p=7, op="mul").truth([3], [4]).tolist() == [5]
    # (99 + 99) mod 113 = 85, written least significant digit first as 580
    assert ModularDigitTask(train_digits=2, width=3, p=113).encode([99], [99])[0].tolist() == [0, 9, 9, 0, 9, 9, 5, 8, 0]


digit_tasks = st.sampled_from(
    [AdditionTask(3, 5), AdditionTask(1, 2), MultiplicationTask(2, 4), ModularDigitTask(2, 3, p=97, op="mul"), ModularDigitTask(3, 5)]
)


@settings(max_examples=200, deadline=None)
@given(task=digit_tasks, data=st.data())
def test_digit_round_trip(task, data):
    a = data.draw(st.lists(st.integers(0, task.max_operand), min_size=1, max_size=20))
    b = data.draw(st.lists(st.integers(0, task.max_operand), min_size=len(a), max_size=len(a)))
    tokens = task.encode(a, b)
    assert tokens.shape == (len(a), task.seq_len)
    assert tokens.min() >= 0 and tokens.max() < task.d_vocab
    da, db, answer = task.decode(tokens)
    assert da.tolist() == a and db.tolist() == b
    assert answer.tolist() == [plain_truth(task, x, y) for x, y in zip(a, b)]


def plain_truth(task, a: int, b: int) -> int:
    """The answer in plain Python, written without the kit's relations."""
    if task.kind == "addition":
        return a + b
    if task.kind == "multiplication":
        return a * b
    return (a + b) % task.p if task.op == "add" else (a * b) % task.p


@pytest.mark.parametrize(
    "task", [AdditionTask(3, 5), MultiplicationTask(2, 4), MultiplicationTask(3, 6), ModularDigitTask(2, 3, p=97, op="mul"),
             ModularDigitTask(3, 5, p=1000), ModularTask(p=113), ModularTask(p=59, op="mul")],
    ids=str,
)
def test_truth_against_plain_python(task):
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, task.max_operand + 1, 3000), rng.integers(0, task.max_operand + 1, 3000)
    assert task.truth(a, b).tolist() == [plain_truth(task, int(x), int(y)) for x, y in zip(a, b)]
    tokens = task.encode(a, b)  # the answer tokens spell the plain-Python answer in the layout's digit order
    if task.kind == "modular":
        assert tokens[:, -1].tolist() == [plain_truth(task, int(x), int(y)) for x, y in zip(a, b)]
    else:
        written = ["".join(map(str, row[task.prompt_len:][::-1])) for row in tokens]  # most significant first
        assert written == [str(plain_truth(task, int(x), int(y))).zfill(task.answer_len) for x, y in zip(a, b)]


@settings(max_examples=100, deadline=None)
@given(p=st.integers(2, 300), op=st.sampled_from(["add", "mul"]), data=st.data())
def test_modular_round_trip(p, op, data):
    task = ModularTask(p=p, op=op)
    a = data.draw(st.lists(st.integers(0, p - 1), min_size=1, max_size=20))
    b = data.draw(st.lists(st.integers(0, p - 1), min_size=len(a), max_size=len(a)))
    da, db, answer = task.decode(task.encode(a, b))
    assert da.tolist() == a and db.tolist() == b
    expected = [(x + y) % p if op == "add" else (x * y) % p for x, y in zip(a, b)]
    assert answer.tolist() == expected


@pytest.mark.parametrize("task", [AdditionTask(), MultiplicationTask(), ModularTask(p=31), ModularDigitTask(2, 3)])
def test_to_dict_round_trip(task):
    assert task_from_dict(task.to_dict()) == task


def test_id_split_is_disjoint_and_seeded():
    task = AdditionTask(train_digits=3)
    (tra, trb), (tea, teb) = task.id_split(seed=0)
    assert len(tra) == len(tea) == 10_000
    train_pairs, test_pairs = set(zip(tra, trb)), set(zip(tea, teb))
    assert len(train_pairs) == 10_000 and len(test_pairs) == 10_000
    assert not train_pairs & test_pairs
    assert max(tra.max(), trb.max(), tea.max(), teb.max()) < 1000
    (tra2, _), _ = task.id_split(seed=0)
    (tra3, _), _ = task.id_split(seed=1)
    assert np.array_equal(tra, tra2) and not np.array_equal(tra, tra3)


def test_modular_split_covers_all_pairs():
    task = ModularTask(p=23, train_fraction=0.3)
    (tra, trb), (tea, teb) = task.id_split(seed=3)
    pairs = set(zip(tra, trb)) | set(zip(tea, teb))
    assert len(tra) == round(0.3 * 23 * 23) and len(pairs) == 23 * 23
    assert not set(zip(tra, trb)) & set(zip(tea, teb))


def test_ood_samples_have_exactly_m_digits():
    task = AdditionTask(train_digits=3)
    a, b = task.sample_ood(5000, digits=4, seed=0)
    assert a.min() >= 1000 and b.min() >= 1000 and a.max() < 10_000 and b.max() < 10_000
    a, b = task.sample_ood(5000, digits=5, mode="either", seed=0)
    assert np.all((a >= 1000) | (b >= 1000)) and max(a.max(), b.max()) < 100_000
    assert (a < 1000).any()  # "either" keeps short operands beside long ones


def test_grid():
    a, b = AdditionTask().grid(range(3), range(10, 14))
    assert a.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and b.tolist() == [10, 11, 12, 13] * 3


@pytest.mark.parametrize(
    "a, b, message",
    [
        ("x", 1, "whole numbers"),
        (-1, 2, "negative"),
        (100_000, 1, "too wide"),
        (1.5, 2, "whole numbers"),
        (10**30, 1, "too large"),
        ([1, 2], [1, 2, 3], "same length"),
    ],
)
def test_bad_operands(a, b, message):
    with pytest.raises(InputError, match=message):
        AdditionTask().encode(a, b)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: make_task("subtraction"), "unknown task"),
        (lambda: AdditionTask(train_digits=6, width=5), "does not fit"),
        (lambda: AdditionTask(width=12), "too large"),
        (lambda: ModularTask(p=1), "modulus"),
        (lambda: ModularTask(op="div"), "op must be"),
        (lambda: ModularTask().sample_ood(10), "no OOD split"),
        (lambda: AdditionTask().sample_ood(10, digits=3), "OOD digits"),
        (lambda: make_task("addition", colour=1), "no field"),
        (lambda: parse_operand("12a"), "digits"),
        (lambda: parse_operand("-3"), "digits"),
    ],
)
def test_bad_task_input(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_parse_operand_accepts_padded_digits():
    assert parse_operand(" 0042 ") == 42


def test_id_split_refuses_more_than_the_pool_and_fits_small_tasks():
    task = AdditionTask(train_digits=1, width=2)
    with pytest.raises(InputError, match="exceeds the 100 ID pairs"):
        task.id_split(n_train=2000)
    with pytest.raises(InputError, match="exceeds the 100 ID pairs"):
        task.id_split(n_train=60, n_test=50)
    (tra, _), (tea, _) = task.id_split()
    assert (len(tra), len(tea)) == (70, 30)
    (tra, _), (tea, _) = AdditionTask(train_digits=2, width=3).id_split()
    assert (len(tra), len(tea)) == (7000, 3000)
    (tra, _), (tea, _) = AdditionTask(train_digits=2, width=3).id_split(n_train=9000)
    assert (len(tra), len(tea)) == (9000, 1000)


def test_sample_id_without_replacement():
    task = AdditionTask(train_digits=2, width=3)
    a, b = task.sample_id(10_000, seed=1, replace=False)
    assert len(set(zip(a.tolist(), b.tolist()))) == 10_000 and max(a.max(), b.max()) < 100
    with pytest.raises(InputError, match="distinct ID pairs"):
        task.sample_id(10_001, replace=False)


def test_position_names():
    names = AdditionTask(train_digits=3, width=5).position_names()
    assert names[:5] == ["a[10^4]", "a[10^3]", "a[10^2]", "a[10^1]", "a[10^0]"] and names[9] == "b[10^0]"
    assert names[10:] == [f"ans[10^{k}]" for k in range(6)] and len(names) == AdditionTask().seq_len
    # 349 + 705: the digit under each name is that digit of the operand or answer
    tokens = AdditionTask().encode([349], [705])[0]
    assert dict(zip(names, tokens.tolist()))["a[10^2]"] == 3 and dict(zip(names, tokens.tolist()))["ans[10^3]"] == 1
    assert ModularTask(p=113).position_names() == ["a", "b", "=", "ans"]
    assert len(MultiplicationTask().position_names()) == MultiplicationTask().seq_len


@pytest.mark.parametrize("task, name", [
    (AdditionTask(train_digits=3, width=5), "(a mod 10^3) + (b mod 10^3)"),
    (MultiplicationTask(train_digits=2, width=4), "(a mod 10^2) * (b mod 10^2)"),
    (ModularDigitTask(p=101, train_digits=2, width=4), "((a mod 10^2) + (b mod 10^2)) mod 101"),
])
def test_the_residue_relation_reduces_each_operand_mod_10_to_the_train_digits(task, name):
    relation = task.residue_relation()
    assert relation.name == name
    a, b = np.array([1349, 57]), np.array([2705, 9999])
    t = 10 ** task.train_digits
    expected = {"+": (a % t) + (b % t), "*": (a % t) * (b % t)}[task.symbol]
    if isinstance(task, ModularDigitTask):
        expected = expected % task.p
    assert relation(a, b).tolist() == expected.tolist()
